// Node 20 lacks Promise.withResolvers (ES2024, Node 22). js-libp2p 2.x itself does not need it, but
// one transitive dependency does: it-queue 1.x (every release), pulled in by mortice 3.3 through
// @libp2p/peer-store 11.2. This shim is imported before anything else by peer.mjs; on Node 22
// it does nothing.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new this((res, rej) => {
      resolve = res
      reject = rej
    })
    return { promise, resolve, reject }
  }
}
