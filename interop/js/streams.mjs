// Stream helpers for the js-libp2p v3 message-stream API (send()/onDrain()/events),
// plus the /echo, /sink and /source handlers of the interop contract.
import { randomFillSync } from 'node:crypto'

export const CHUNK = 64 * 1024
export const MANY = 1024 // stream limits: far above anything the tests open
export const PROTOCOLS = { echo: '/echo/1.0.0', sink: '/sink/1.0.0', source: '/source/1.0.0' }

/**
 * Async-iterate a stream's incoming data as Uint8Array chunks until the remote
 * half-closes (or throw if the stream is reset/aborted). Unlike `for await (x of stream)`
 * this sees data and an EOF that arrived before we started listening, and it
 * applies backpressure: above `highWater` queued bytes the stream is paused, which
 * makes yamux stop sending window updates so the remote writer stalls.
 */
export function reader (stream, highWater = 1 << 20) {
  const queue = []
  let queued = 0
  let done = stream.readableEnded || stream.readStatus === 'closed'
  let error
  let wake
  const notify = () => { const w = wake; wake = undefined; w?.() }
  const onMessage = (evt) => {
    const data = evt.data
    if (data instanceof Uint8Array) queue.push(data)
    else for (const buf of data) queue.push(buf)
    queued += data.byteLength
    if (queued > highWater && stream.readStatus === 'readable') stream.pause()
    notify()
  }
  const onEnd = () => { done = true; notify() }
  const onClose = (evt) => {
    if (evt.error != null) error = evt.error
    else if (stream.readBufferLength > 0) return // 'end' follows once it is delivered
    done = true
    notify()
  }
  stream.addEventListener('message', onMessage)
  stream.addEventListener('end', onEnd)
  stream.addEventListener('close', onClose)
  if (stream.status !== 'open' && stream.readBufferLength === 0) done = true
  return {
    async * [Symbol.asyncIterator] () {
      try {
        while (true) {
          if (queue.length > 0) {
            const chunk = queue.shift()
            queued -= chunk.byteLength
            if (stream.readStatus === 'paused' && queued <= highWater / 2) stream.resume()
            yield chunk
          } else if (error != null) {
            throw error
          } else if (done) {
            return
          } else {
            await new Promise(resolve => { wake = resolve })
          }
        }
      } finally {
        stream.removeEventListener('message', onMessage)
        stream.removeEventListener('end', onEnd)
        stream.removeEventListener('close', onClose)
      }
    }
  }
}

/** Send one chunk, waiting for the stream to drain when its buffer is full. */
export async function send (stream, data) {
  if (!stream.send(data)) await stream.onDrain()
}

/** Send `total` bytes taken from `payload` (repeated if shorter) in CHUNK pieces. */
export async function sendBytes (stream, payload, total = payload.byteLength) {
  let sent = 0
  while (sent < total) {
    const start = sent % payload.byteLength
    const len = Math.min(CHUNK, total - sent, payload.byteLength - start)
    await send(stream, payload.subarray(start, start + len))
    sent += len
  }
}

export function randomBytes (n) {
  return randomFillSync(new Uint8Array(n))
}

const FILLER = randomBytes(1 << 20)

async function echoHandler (stream) {
  for await (const chunk of reader(stream)) await send(stream, chunk)
  await stream.close()
}

async function sinkHandler (stream) {
  let count = 0
  for await (const chunk of reader(stream)) count += chunk.byteLength
  await send(stream, new TextEncoder().encode(`${count}\n`))
  await stream.close()
}

async function sourceHandler (stream) {
  let line = ''
  for await (const chunk of reader(stream)) {
    line += Buffer.from(chunk).toString('latin1')
    if (line.includes('\n') || line.length > 32) break
  }
  const text = line.split('\n')[0]
  if (!/^\d+$/.test(text)) throw new Error(`bad source request ${JSON.stringify(text)}`)
  await sendBytes(stream, FILLER, Number(text))
  await stream.close()
}

function guarded (name, handler) {
  return async (stream, connection) => {
    try {
      await handler(stream, connection)
    } catch (err) {
      console.error(`[${name}] ${connection.remotePeer}: ${err?.message ?? err}`)
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }
}

/** Register echo/sink/source with stream limits off and relayed connections allowed. */
export async function registerHandlers (node) {
  const opts = { maxInboundStreams: MANY, maxOutboundStreams: MANY, runOnLimitedConnection: true }
  await node.handle(PROTOCOLS.echo, guarded('echo', echoHandler), opts)
  await node.handle(PROTOCOLS.sink, guarded('sink', sinkHandler), opts)
  await node.handle(PROTOCOLS.source, guarded('source', sourceHandler), opts)
}
