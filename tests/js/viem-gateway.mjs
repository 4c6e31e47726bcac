// A real JavaScript client (viem) against Livechain's JSON-RPC gateway: reads over HTTP (one
// of them a JSON-RPC batch), then newHeads (viem's WebSocket transport) and logs (watchEvent)
// subscriptions over WebSocket, printing one
// JSON line per thing received. The Rust test (tests/it/gateway/viem.rs) drives the chain and
// checks the lines; this script stops when its stdin closes.
//
// Usage: node viem-gateway.mjs <http url> <ws url> <chain id> [contract address for the logs]
import { createPublicClient, http, webSocket, toHex } from 'viem';

const [httpUrl, wsUrl, chainId, address] = process.argv.slice(2);
const chain = {
  id: Number(chainId),
  name: 'livechain',
  nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
  rpcUrls: { default: { http: [httpUrl], webSocket: [wsUrl] } },
};
const out = (line) => process.stdout.write(JSON.stringify(line) + '\n');

const overHttp = createPublicClient({ chain, transport: http(httpUrl, { batch: true }) });
const number = await overHttp.getBlockNumber();
const block = await overHttp.getBlock({ blockNumber: number });
const logs = await overHttp.getLogs({ fromBlock: number, toBlock: number });
// Issued together, sent as one JSON-RPC batch.
const [id, again] = await Promise.all([overHttp.getChainId(), overHttp.getBlock({ blockNumber: number })]);
out({ type: 'http', number: toHex(number), hash: block.hash, logs: logs.length, chainId: id, same: again.hash === block.hash });

const overWs = createPublicClient({ chain, transport: webSocket(wsUrl) });
const fail = (what) => (error) => out({ type: 'error', what, message: String(error) });
// newHeads through viem's WebSocket transport as it delivers them (watchBlocks would refetch
// each block by number, which after a reorg may name another block).
await overWs.transport.subscribe({
  params: ['newHeads'],
  onData: ({ result: b }) => out({
    type: 'head', number: b.number, hash: b.hash, parentHash: b.parentHash,
    stateRoot: b.stateRoot, logsBloom: b.logsBloom,
  }),
  onError: fail('newHeads'),
});
overWs.watchEvent({
  address: address || undefined,
  onLogs: (list) => {
    for (const l of list) {
      out({ type: 'log', blockHash: l.blockHash, blockNumber: toHex(l.blockNumber), logIndex: toHex(l.logIndex), removed: l.removed });
    }
  },
  onError: fail('logs'),
});
// viem subscribes asynchronously: wait for both subscription ids before saying ready.
const socket = await overWs.transport.getRpcClient();
for (let i = 0; i < 100 && socket.subscriptions.size < 2; i++) {
  await new Promise((r) => setTimeout(r, 20));
}
out({ type: 'ready', subscriptions: socket.subscriptions.size });
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
