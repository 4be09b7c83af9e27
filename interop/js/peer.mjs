// js-libp2p test peer: see ../CONTRACT.md. NDJSON on stdout, logs on stderr.
import './polyfill.mjs' // must be evaluated before any libp2p module runs
import { multiaddr } from '@multiformats/multiaddr'
import { createNode, loadKey } from './node.mjs'
import { MANY, registerHandlers } from './streams.mjs'
import { Dialer, UsageError, parseSteps } from './steps.mjs'

const USAGE = `usage:
  peer.mjs listen [--listen MA]... [--key FILE] [--relay RELAY_MA]
  peer.mjs dial TARGET_MA --steps STEP[,STEP...] [--key FILE]
  peer.mjs relay [--host H] [--port P] [--key FILE] [--unlimited] [--limit-duration S] [--limit-data B]`

const FLAGS = {
  listen: { listen: 'list', key: 'value', relay: 'value' },
  dial: { steps: 'value', key: 'value' },
  relay: { host: 'value', port: 'value', key: 'value', unlimited: 'bool', 'limit-duration': 'value', 'limit-data': 'value' }
}

function parseArgs (argv) {
  const [role, ...rest] = argv
  const spec = FLAGS[role]
  if (spec == null) throw new UsageError(`unknown role ${JSON.stringify(role)}`)
  const opts = { role, positional: [], listen: [] }
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]
    if (!arg.startsWith('--')) { opts.positional.push(arg); continue }
    let [name, value] = arg.slice(2).split(/=(.*)/s)
    const kind = spec[name]
    if (kind == null) throw new UsageError(`unknown option --${name} for ${role}`)
    if (kind === 'bool') { opts[name] = true; continue }
    if (value === undefined) {
      if (i + 1 >= rest.length) throw new UsageError(`--${name} needs a value`)
      value = rest[++i]
    }
    if (kind === 'list') opts[name].push(value)
    else opts[name] = value
  }
  const wantPositional = role === 'dial' ? 1 : 0
  if (opts.positional.length !== wantPositional) throw new UsageError(`${role} takes ${wantPositional} positional argument(s)`)
  if (role === 'dial' && opts.steps == null) throw new UsageError('dial needs --steps')
  for (const name of ['port', 'limit-duration', 'limit-data']) {
    if (opts[name] != null && !/^\d+$/.test(opts[name])) throw new UsageError(`--${name} must be a non-negative integer`)
  }
  try {
    for (const ma of [...opts.listen, opts.relay, opts.positional[0]]) if (ma != null) multiaddr(ma)
  } catch (err) {
    throw new UsageError(err.message)
  }
  if (role === 'dial') opts.steps = parseSteps(opts.steps)
  return opts
}

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const peerIdOf = (ma) => ma.getComponents().findLast(c => c.name === 'p2p')?.value
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))

function ready (node, main) {
  const multiaddrs = node.getMultiaddrs().map(String)
  emit({ event: 'ready', peer_id: node.peerId.toString(), multiaddr: main ?? multiaddrs[0], multiaddrs })
}

// SIGTERM/SIGINT at any time: stop libp2p (if started) and exit 0.
let running // the libp2p node, once created
let stopping = false
async function shutdown (signal) {
  if (stopping) return
  stopping = true
  console.error(`${signal}: stopping`)
  setTimeout(() => process.exit(0), 5000).unref()
  try { await running?.stop() } catch (err) { console.error('stop failed:', err) }
  process.exit(0)
}
process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))

/** Keep serving until a signal arrives. */
function serveForever (node) {
  running = node
  setInterval(() => {}, 1 << 30) // keep the event loop alive
}

async function listen (opts) {
  const listenAddrs = opts.listen.length > 0 ? opts.listen : ['/ip4/127.0.0.1/tcp/0']
  let circuit
  if (opts.relay != null) {
    const relay = multiaddr(opts.relay)
    if (peerIdOf(relay) == null) throw new UsageError('--relay needs a multiaddr ending in /p2p/<relay id>')
    circuit = relay.encapsulate('/p2p-circuit')
    listenAddrs.push(circuit.toString())
  }
  // with a relay listen address, start() resolves only once the reservation is made
  const node = await createNode({ privateKey: await loadKey(opts.key), listen: listenAddrs })
  await registerHandlers(node)
  serveForever(node)
  if (circuit != null) {
    const deadline = Date.now() + 30_000
    while (!node.getMultiaddrs().some(ma => ma.toString().includes('/p2p-circuit'))) {
      if (Date.now() > deadline) throw new Error('no relay reservation after 30 s')
      await sleep(50)
    }
    ready(node, circuit.encapsulate(`/p2p/${node.peerId}`).toString())
  } else {
    ready(node)
  }
}

async function relay (opts) {
  const host = opts.host ?? '127.0.0.1'
  const ma = `/${host.includes(':') ? 'ip6' : 'ip4'}/${host}/tcp/${opts.port ?? 0}`
  const duration = opts['limit-duration'] != null ? Number(opts['limit-duration']) : undefined
  const data = opts['limit-data'] != null ? BigInt(opts['limit-data']) : undefined
  const custom = opts.unlimited === true || duration != null || data != null
  const init = !custom
    ? {} // the implementation's defaults: 15 reservations, 2 min / 128 KiB per circuit
    : {
        maxInboundHopStreams: MANY,
        maxOutboundHopStreams: MANY,
        maxOutboundStopStreams: MANY,
        reservations: {
          maxReservations: 1_000_000,
          applyDefaultLimit: duration != null || data != null,
          // js enforces this in milliseconds (and also puts ms in the wire Limit.duration)
          defaultDurationLimit: duration != null ? duration * 1000 : undefined,
          defaultDataLimit: data
        }
      }
  const node = await createNode({ privateKey: await loadKey(opts.key), listen: [ma], relay: init })
  if (custom) {
    // the store substitutes its 2 min / 128 KiB defaults for unset limits; unset them
    const store = node.services.relay.reservationStore
    if (duration == null) store.defaultDurationLimit = undefined
    if (data == null) store.defaultDataLimit = undefined
  }
  await registerHandlers(node)
  serveForever(node)
  ready(node)
}

async function dial (opts) {
  const target = multiaddr(opts.positional[0])
  const targetId = peerIdOf(target)
  const node = await createNode({ privateKey: await loadKey(opts.key), listen: [] })
  await registerHandlers(node)
  const identified = new Promise(resolve => {
    node.addEventListener('peer:identify', (evt) => {
      if (targetId == null || evt.detail.peerId.toString() === targetId) resolve(evt.detail)
    })
  })
  const result = { event: 'result', ok: false, connect_ms: null, relayed: target.toString().includes('/p2p-circuit'), encryption: '/noise', multiplexer: '/yamux/1.0.0', steps: {} }
  const t0 = performance.now()
  try {
    const conn = await node.dial(target, { signal: AbortSignal.timeout(30_000) })
    result.connect_ms = Number((performance.now() - t0).toFixed(3))
    result.relayed = conn.remoteAddr.toString().includes('/p2p-circuit')
    result.encryption = conn.encryption ?? result.encryption
    result.multiplexer = conn.multiplexer ?? result.multiplexer
    Object.assign(result, await new Dialer(node, conn, t0, identified).run(opts.steps))
  } catch (err) {
    console.error('dial failed:', err)
    result.error = `${err?.name ?? 'Error'}: ${err?.message ?? err}`
  }
  emit(result)
  const force = setTimeout(() => process.exit(result.ok ? 0 : 1), 3000)
  force.unref()
  await node.stop().catch(err => console.error('stop failed:', err))
  process.exit(result.ok ? 0 : 1)
}

process.on('unhandledRejection', (err) => console.error('unhandled rejection:', err))

let opts
try {
  opts = parseArgs(process.argv.slice(2))
} catch (err) {
  if (!(err instanceof UsageError)) throw err
  console.error(`${err.message}\n${USAGE}`)
  process.exit(2)
}
try {
  await { listen, dial, relay }[opts.role](opts)
} catch (err) {
  console.error(`${opts.role} failed:`, err)
  process.exit(err instanceof UsageError ? 2 : 1)
}
