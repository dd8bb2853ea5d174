/** A TCP port on 127.0.0.1 that was free a moment ago (for servers that need a fixed port). */
import net from 'node:net';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Attempts at a free pair before freePortPair gives up. */
const PORT_PAIR_ATTEMPTS = 20;

function listenOn(port: number): Promise<net.Server | undefined> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(undefined));
    s.listen({ port, host: '127.0.0.1', exclusive: true }, () => resolve(s));
  });
}

/** P where ports P and P + 1 on 127.0.0.1 were both free a moment ago (vpcd's two slots). */
export async function freePortPair(): Promise<number> {
  for (let attempt = 0; attempt < PORT_PAIR_ATTEMPTS; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 40000);
    const servers = await Promise.all([listenOn(port), listenOn(port + 1)]);
    await Promise.all(servers.map((s) => new Promise((r) => (s ? s.close(r) : r(undefined)))));
    if (servers.every(Boolean)) return port;
  }
  throw new Error('no free port pair on 127.0.0.1');
}
