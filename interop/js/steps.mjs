// The dial steps of the interop contract, each run on one established connection.
import { PROTOCOLS, MANY, reader, randomBytes, send, sendBytes } from './streams.mjs'

const now = () => performance.now()
const round = (x, d = 3) => Number(x.toFixed(d))
const mbps = (bytes, ms) => round(bytes / 1e6 / (ms / 1000))
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
const STEP_TIMEOUT_MS = 120_000

function stats (samples) {
  const s = [...samples].sort((a, b) => a - b)
  const at = (q) => s[Math.max(0, Math.ceil(q * s.length) - 1)]
  return { median_ms: round(at(0.5)), p90_ms: round(at(0.9)), min_ms: round(s[0]), samples: s.length }
}

function intArg (value, name) {
  if (!/^\d+$/.test(value ?? '')) throw new UsageError(`step ${name}: expected a non-negative integer, got ${JSON.stringify(value)}`)
  return Number(value)
}

/** Half-close, give the remote a moment to close its side, else reset the stream. */
async function finish (stream, it) {
  await stream.close()
  const timer = setTimeout(() => stream.abort(new Error('remote did not close the stream')), 2000)
  try {
    while (!(await it.next()).done);
  } catch {} finally {
    clearTimeout(timer)
  }
}

export class UsageError extends Error {}

/** Parse "echo:10,ping:3,..." into [{ name, args }] (throws UsageError). */
export function parseSteps (text) {
  const arity = { echo: 1, sink: 1, source: 1, latency: 1, ping: 1, concurrent: 2, pause: 2, identify: 0 }
  return text.split(',').filter(Boolean).map(spec => {
    const [name, ...rest] = spec.split(':')
    if (!(name in arity)) throw new UsageError(`unknown step ${JSON.stringify(name)}`)
    if (rest.length !== arity[name]) throw new UsageError(`step ${name} takes ${arity[name]} argument(s)`)
    return { name, args: rest.map(v => intArg(v, name)) }
  })
}

/** Compares received chunks against an expected payload, in order. */
class Checker {
  constructor (expected) { this.expected = expected; this.got = 0 }
  add (chunk) {
    const end = this.got + chunk.byteLength
    if (end > this.expected.byteLength) throw new Error(`received more than the ${this.expected.byteLength} bytes sent`)
    if (Buffer.compare(chunk, this.expected.subarray(this.got, end)) !== 0) throw new Error(`data mismatch within bytes ${this.got}..${end}`)
    this.got = end
  }
  finish () {
    if (this.got !== this.expected.byteLength) throw new Error(`got ${this.got} of ${this.expected.byteLength} bytes before EOF`)
  }
}

export class Dialer {
  constructor (node, connection, dialStart, identified) {
    this.node = node
    this.conn = connection
    this.dialStart = dialStart
    this.identified = identified // Promise<IdentifyResult> from the 'peer:identify' event
    this.payloads = new Map()
  }

  payload (n) {
    if (!this.payloads.has(n)) this.payloads.set(n, randomBytes(n))
    return this.payloads.get(n)
  }

  open (protocol) {
    return this.conn.newStream(protocol, { maxOutboundStreams: MANY, runOnLimitedConnection: true, signal: AbortSignal.timeout(30_000) })
  }

  /** Echo `data` over a new stream, writing and reading concurrently. */
  async echoOnce (data, onFirstByte) {
    const stream = await this.open(PROTOCOLS.echo)
    try {
      const check = new Checker(data)
      const writing = sendBytes(stream, data).then(() => stream.close())
      writing.catch(() => {}) // surfaced by `await writing` below
      for await (const chunk of reader(stream)) {
        if (check.got === 0) onFirstByte?.()
        check.add(chunk)
      }
      check.finish()
      await writing
    } catch (err) {
      stream.abort(err)
      throw err
    }
  }

  async echo (n) {
    let firstByte
    const t0 = now()
    await this.echoOnce(this.payload(n), () => { firstByte ??= now() })
    const ms = now() - t0
    return { mb_per_s: mbps(n, ms), first_byte_since_dial_ms: round((firstByte ?? now()) - this.dialStart) }
  }

  async sink (n) {
    const t0 = now()
    const stream = await this.open(PROTOCOLS.sink)
    await sendBytes(stream, this.payload(n))
    await stream.close()
    let reply = ''
    for await (const chunk of reader(stream)) reply += Buffer.from(chunk).toString('latin1')
    const ms = now() - t0
    if (reply.trim() !== String(n)) throw new Error(`sink replied ${JSON.stringify(reply)}, expected ${n}`)
    return { mb_per_s: mbps(n, ms) }
  }

  async source (n) {
    const t0 = now()
    const stream = await this.open(PROTOCOLS.source)
    const chunks = reader(stream)
    await send(stream, new TextEncoder().encode(`${n}\n`))
    await stream.close()
    let got = 0
    for await (const chunk of chunks) got += chunk.byteLength
    const ms = now() - t0
    if (got !== n) throw new Error(`source sent ${got} bytes, expected ${n}`)
    return { mb_per_s: mbps(n, ms) }
  }

  async latency (k) {
    const one = new Uint8Array([0x5a])
    const fresh = []
    for (let i = 0; i < k; i++) {
      const t0 = now()
      await this.echoOnce(one)
      fresh.push(now() - t0)
    }
    const rtts = []
    const stream = await this.open(PROTOCOLS.echo)
    const it = reader(stream)[Symbol.asyncIterator]()
    for (let i = 0; i < k; i++) {
      const t0 = now()
      await send(stream, one)
      const { value, done } = await it.next()
      if (done || value.byteLength !== 1 || value[0] !== one[0]) throw new Error('echo stream closed or replied wrongly')
      rtts.push(now() - t0)
    }
    await finish(stream, it)
    return { new_stream_echo: stats(fresh), open_stream_rtt: stats(rtts) }
  }

  async ping (k) {
    const stream = await this.open('/ipfs/ping/1.0.0')
    const it = reader(stream)[Symbol.asyncIterator]()
    const rtts = []
    for (let i = 0; i < k; i++) {
      const probe = randomBytes(32)
      const check = new Checker(probe)
      const t0 = now()
      await send(stream, probe)
      while (check.got < 32) {
        const { value, done } = await it.next()
        if (done) throw new Error('ping stream closed early')
        check.add(value)
      }
      rtts.push(now() - t0)
    }
    await finish(stream, it)
    return { median_ms: stats(rtts).median_ms }
  }

  async concurrent (streams, n) {
    const data = this.payload(n)
    const t0 = now()
    await Promise.all(Array.from({ length: streams }, () => this.echoOnce(data)))
    return { streams, mb_per_s: mbps(streams * n, now() - t0) }
  }

  async pause (n, seconds) {
    const data = this.payload(n)
    const stream = await this.open(PROTOCOLS.echo)
    try {
      // stop granting receive window: the echo server then stalls, and so do we
      stream.pause()
      const writing = sendBytes(stream, data).then(() => stream.close())
      writing.catch(() => {})
      const t0 = now()
      await sleep(seconds * 1000)
      const paused = (now() - t0) / 1000
      if (stream.status !== 'open') throw new Error(`stream ${stream.status} during the pause`)
      const check = new Checker(data)
      const chunks = reader(stream)
      stream.resume()
      for await (const chunk of chunks) check.add(chunk)
      check.finish()
      await writing
      return { paused_s: round(paused) }
    } catch (err) {
      stream.abort(err)
      throw err
    }
  }

  async identify () {
    const timeout = sleep(10_000).then(() => null)
    const result = await Promise.race([this.identified, timeout]) ??
      await this.node.services.identify.identify(this.conn, { signal: AbortSignal.timeout(30_000) })
    return {
      protocols: [...result.protocols].sort(),
      agent_version: result.agentVersion ?? null,
      listen_addrs: result.listenAddrs.map(String)
    }
  }

  /** Run every step; returns { ok, steps }. */
  async run (steps) {
    const out = {}
    let ok = true
    for (const { name, args } of steps) {
      if (this.conn.status !== 'open') {
        out[name] = { ok: false, error: `connection ${this.conn.status}, step not run` }
        ok = false
        continue
      }
      let timer
      try {
        const timeout = new Promise((resolve, reject) => {
          timer = setTimeout(() => reject(new Error(`step timed out after ${STEP_TIMEOUT_MS / 1000} s`)), STEP_TIMEOUT_MS)
        })
        out[name] = { ok: true, ...await Promise.race([this[name](...args), timeout]) }
      } catch (err) {
        ok = false
        const conn = this.conn.status === 'open' ? '' : ` (connection ${this.conn.status})`
        out[name] = { ok: false, error: `${err?.name ?? 'Error'}: ${err?.message ?? err}${conn}` }
        console.error(`step ${name} failed:`, err)
      } finally {
        clearTimeout(timer)
      }
    }
    return { ok, steps: out }
  }
}
