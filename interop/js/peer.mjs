// A js-libp2p peer for tests/tests/interop_js_libp2p.rs (run them with `cargo xtask interop-js`).
//
//   node peer.mjs listen [tcp|quic]
//     Starts a node on /ip4/127.0.0.1/tcp/0 (tcp + noise + yamux; the default) or on
//     /ip4/127.0.0.1/udp/0/quic-v1 (@chainsafe/libp2p-quic), with ping, identify and an echo
//     handler on /x/echo/1.0.0. Prints one JSON line {"event":"listening","multiaddr":…} and then
//     one JSON line per identified peer ({"event":"identified",…}). Stops when stdin closes or
//     after PEER_TIMEOUT_MS. Two stream-end handlers report one JSON line per stream:
//     /x/ends/half-close-then-reset/1.0.0 reads to the end, then writes until the dialer resets
//     ({"event":"ends-half",…}); /x/ends/reset-after-fin/1.0.0 answers "go ahead", closes its
//     write side, then reads to the end ({"event":"ends-fin",…}).
//
//   node peer.mjs dial <multiaddr with /p2p/> [bytes]
//     Dials (over QUIC for a /quic-v1 address, else over TCP), pings, runs identify, echoes
//     `bytes` (default 1 MiB) of a known pattern over /x/echo/1.0.0 and checks them. Prints one
//     JSON result line and exits 0 (all good) or 1.
//
// The QUIC transport is loaded only for QUIC: it is a native module (napi-rs, prebuilt for the
// platforms package-lock.json lists), and the TCP cases must not depend on it.
//
// Every wait is bounded by PEER_TIMEOUT_MS (default 60 s) or a shorter per-step timeout.
// EXPECT_AGENT_PREFIX (default "p2pnet/") is what the dialled peer's agent version must start with.

import './node20.mjs' // first: a shim later modules need on Node 20
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const ECHO = '/x/echo/1.0.0'
const ENDS_HALF = '/x/ends/half-close-then-reset/1.0.0'
const ENDS_FIN = '/x/ends/reset-after-fin/1.0.0'
const TIMEOUT_MS = Number(process.env.PEER_TIMEOUT_MS ?? 60000)
const STEP_MS = Math.min(TIMEOUT_MS, 20000)
// What the dialled peer's identify agent version must start with.
const AGENT_PREFIX = process.env.EXPECT_AGENT_PREFIX ?? 'p2pnet/'

function out (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function pattern (len) {
  const buf = new Uint8Array(len)
  for (let i = 0; i < len; i++) buf[i] = (i * 31) % 251
  return buf
}

function bounded (promise, ms, what) {
  let timer
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

// A node on `transport` ('tcp' or 'quic'); it listens on loopback when `listen`.
async function createNode (listen, transport = 'tcp') {
  if (transport === 'quic') {
    const { quic } = await import('@chainsafe/libp2p-quic')
    return createLibp2p({
      addresses: { listen: listen ? ['/ip4/127.0.0.1/udp/0/quic-v1'] : [] },
      transports: [quic()],
      services: { ping: ping(), identify: identify() }
    })
  }
  return createLibp2p({
    addresses: { listen: listen ? ['/ip4/127.0.0.1/tcp/0'] : [] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { ping: ping(), identify: identify() }
  })
}

// Echo: every chunk read is written back; the write side closes once the remote closes its write
// side (the sink ends when its source, our readable side, ends).
async function echo ({ stream }) {
  try {
    await stream.sink(stream.source)
  } catch (err) {
    stream.abort(err)
  }
}

// Half close then reset: read the upload to its end, then answer with up to 64 MiB until the
// dialer resets (the write then fails and the stream's status says why).
async function endsHalf ({ stream }) {
  const report = { event: 'ends-half', read: 0, written: 0 }
  try {
    for await (const chunk of stream.source) report.read += chunk.byteLength
    const chunk = new Uint8Array(64 * 1024)
    await bounded(stream.sink((function * () {
      for (let i = 0; i < 1024; i++) {
        yield chunk
        report.written += chunk.byteLength
      }
    })()), STEP_MS, 'answer')
  } catch (err) {
    report.error = err?.name ?? String(err)
    report.message = err?.message
  }
  report.status = stream.status
  out(report)
}

// A reset after our FIN: answer, close the write side, then read what comes to its end.
async function endsFin ({ stream }) {
  const report = { event: 'ends-fin', read: '' }
  try {
    await bounded(stream.sink([new TextEncoder().encode('go ahead')]), STEP_MS, 'answer')
    const decoder = new TextDecoder()
    await bounded((async () => {
      for await (const chunk of stream.source) report.read += decoder.decode(chunk.subarray())
    })(), STEP_MS, 'read')
  } catch (err) {
    report.error = err?.name ?? String(err)
    report.message = err?.message
  }
  report.status = stream.status
  out(report)
}

async function listenMode (transport) {
  const node = await createNode(true, transport)
  await node.handle(ECHO, echo)
  await node.handle(ENDS_HALF, endsHalf)
  await node.handle(ENDS_FIN, endsFin)
  node.addEventListener('peer:identify', (evt) => {
    out({
      event: 'identified',
      peer: evt.detail.peerId.toString(),
      agentVersion: evt.detail.agentVersion ?? null,
      protocols: evt.detail.protocols,
      listenAddrs: evt.detail.listenAddrs.map(String)
    })
  })
  const prefix = transport === 'quic' ? '/ip4/127.0.0.1/udp/' : '/ip4/127.0.0.1/tcp/'
  const addr = node.getMultiaddrs().find((ma) => ma.toString().startsWith(prefix))
  out({
    event: 'listening',
    multiaddr: addr.toString(),
    peerId: node.peerId.toString()
  })

  let stopping = false
  const stop = async (code) => {
    if (stopping) return
    stopping = true
    await bounded(node.stop(), 5000, 'stop').catch(() => {})
    process.exit(code)
  }
  process.stdin.on('end', () => { void stop(0) })
  process.stdin.on('close', () => { void stop(0) })
  process.stdin.resume()
  setTimeout(() => { void stop(0) }, TIMEOUT_MS).unref()
  // Keep the process alive while waiting (the timer above is unref'd).
  setInterval(() => {}, 1 << 30)
}

async function echoCheck (connection, len) {
  const stream = await bounded(connection.newStream(ECHO), STEP_MS, 'open echo stream')
  const payload = pattern(len)
  // The sink closes our write side (a half close) when the generator ends; the echo ends then.
  const write = stream.sink((function * () {
    const chunk = 64 * 1024
    for (let off = 0; off < len; off += chunk) {
      yield payload.subarray(off, Math.min(off + chunk, len))
    }
  })())
  const read = (async () => {
    const back = new Uint8Array(len)
    let got = 0
    for await (const chunk of stream.source) {
      const bytes = chunk.subarray()
      if (got + bytes.length > len) throw new Error(`echo returned more than ${len} bytes`)
      back.set(bytes, got)
      got += bytes.length
    }
    return { back, got }
  })()
  let done
  try {
    done = await bounded(Promise.all([write, read]), STEP_MS, 'echo')
  } catch (err) {
    stream.abort(err)
    throw err
  }
  const [, { back, got }] = done
  if (got !== len) throw new Error(`echo returned ${got} bytes, expected ${len}`)
  for (let i = 0; i < len; i++) {
    if (back[i] !== payload[i]) throw new Error(`echo differs at byte ${i}`)
  }
  await stream.close().catch(() => {})
  return got
}

async function dialMode (target, len) {
  const result = { ok: false, target }
  const node = await createNode(false, target.includes('/quic-v1') ? 'quic' : 'tcp')
  const overall = setTimeout(() => {
    out({ ...result, error: `timed out after ${TIMEOUT_MS} ms` })
    process.exit(1)
  }, TIMEOUT_MS)
  try {
    const ma = multiaddr(target)
    const expected = ma.getPeerId()
    const connection = await bounded(node.dial(ma), STEP_MS, 'dial')
    result.remotePeer = connection.remotePeer.toString()
    if (expected != null && result.remotePeer !== expected) {
      throw new Error(`dialled ${expected} but reached ${result.remotePeer}`)
    }

    result.rttMs = await bounded(node.services.ping.ping(ma), STEP_MS, 'ping')

    const id = await bounded(node.services.identify.identify(connection), STEP_MS, 'identify')
    result.agentVersion = id.agentVersion ?? null
    result.protocols = id.protocols
    result.listenAddrs = id.listenAddrs.map(String)
    if (!(result.agentVersion ?? '').startsWith(AGENT_PREFIX)) {
      throw new Error(`unexpected agent version ${result.agentVersion}`)
    }
    for (const p of ['/ipfs/ping/1.0.0', '/ipfs/id/1.0.0', ECHO]) {
      if (!id.protocols.includes(p)) throw new Error(`identify does not list ${p}`)
    }

    result.echoBytes = await echoCheck(connection, len)
    result.ok = true
  } catch (err) {
    result.error = err?.stack ?? String(err)
  }
  clearTimeout(overall)
  await bounded(node.stop(), 5000, 'stop').catch(() => {})
  out(result)
  process.exit(result.ok ? 0 : 1)
}

const [mode, arg, bytes] = process.argv.slice(2)
if (mode === 'listen' && (arg == null || arg === 'tcp' || arg === 'quic')) {
  await listenMode(arg ?? 'tcp')
} else if (mode === 'dial' && arg != null) {
  await dialMode(arg, Number(bytes ?? 1 << 20))
} else {
  process.stderr.write('usage: node peer.mjs listen [tcp|quic] | node peer.mjs dial <multiaddr> [bytes]\n')
  process.exit(2)
}
