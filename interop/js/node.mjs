// Builds the js-libp2p node used by every role: TCP + Noise + Yamux, identify
// (+push) and ping, optional circuit-relay-v2 hop server, limits raised everywhere.
import { readFile, writeFile } from 'node:fs/promises'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { identify, identifyPush } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { MANY } from './streams.mjs'

/** Load a protobuf-encoded PrivateKey, or create an Ed25519 one (file mode 0600). */
export async function loadKey (file) {
  if (file == null) return generateKeyPair('Ed25519')
  try {
    return privateKeyFromProtobuf(await readFile(file))
  } catch (err) {
    if (err.code !== 'ENOENT') throw err
  }
  const key = await generateKeyPair('Ed25519')
  await writeFile(file, privateKeyToProtobuf(key), { mode: 0o600, flag: 'wx' })
  return key
}

/**
 * @param {object} o
 * @param {import('@libp2p/interface').PrivateKey} o.privateKey
 * @param {string[]} o.listen listen multiaddrs (may include RELAY/p2p-circuit)
 * @param {object} [o.relay] circuitRelayServer init; enables the hop server
 */
export async function createNode ({ privateKey, listen, relay }) {
  const many = { maxInboundStreams: MANY, maxOutboundStreams: MANY, runOnLimitedConnection: true }
  const services = {
    identify: identify({ ...many, timeout: 30_000 }),
    identifyPush: identifyPush(many),
    ping: ping(many)
  }
  if (relay != null) services.relay = circuitRelayServer(relay)
  return createLibp2p({
    privateKey,
    addresses: { listen },
    transports: [tcp(), circuitRelayTransport({ maxInboundStopStreams: MANY, maxOutboundStopStreams: MANY, reservationCompletionTimeout: 20_000 })],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux({
      maxInboundStreams: MANY,
      maxOutboundStreams: MANY,
      // read buffer must exceed the largest yamux window (16 MiB), or a paused
      // stream whose window had grown would be reset
      streamOptions: { maxReadBufferLength: 64 << 20, inactivityTimeout: 600_000 }
    })],
    connectionManager: {
      maxConnections: 10_000,
      maxIncomingPendingConnections: 1_000,
      inboundConnectionThreshold: 10_000,
      maxParallelDials: 100,
      maxDialQueueLength: 1_000,
      inboundUpgradeTimeout: 30_000,
      dialTimeout: 30_000
    },
    // the monitor pings every peer every 10 s and may abort busy connections
    connectionMonitor: { enabled: false },
    services
  })
}
