/**
 * TCP_QUICKACK on a Node socket, through the small addon in `native/` (built by `npm run build`,
 * Linux only). Node has no API for this option; the vpcd transport needs it to acknowledge vpcd's
 * 2-byte length prefix at once instead of after Linux's delayed-ACK timer (~40 ms per APDU with
 * Debian 12's vpcd, see docs/reader-vpcd.md).
 *
 * Where the addon is not there (not built, not Linux), `loadTcpQuickAck()` says why and callers carry
 * on without it: slower, not broken.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface QuickAckAddon {
  quickAck(fd: number): void;
}

/** Sets TCP_QUICKACK on a connected socket; false when it could not (closed, no descriptor). */
export type RearmQuickAck = (socket: net.Socket) => boolean;

export type TcpQuickAck =
  { readonly rearm: RearmQuickAck } | { readonly rearm: undefined; readonly why: string };

/** Where the addon is built, relative to the repository root. */
const ADDON_PATH = path.join('daemon', 'reader', 'native', 'build', 'cardlink-tcp.node');

let loaded: TcpQuickAck | undefined;

/** The addon's re-arm function, or why there is none. Loaded once per process. */
export function loadTcpQuickAck(): TcpQuickAck {
  loaded ??= tryLoad();
  return loaded;
}

function tryLoad(): TcpQuickAck {
  if (process.platform !== 'linux') return { rearm: undefined, why: 'TCP_QUICKACK exists on Linux only' };
  const file = findAddon(path.dirname(fileURLToPath(import.meta.url)));
  if (file === undefined)
    return { rearm: undefined, why: `${ADDON_PATH} is not built (npm run build builds it)` };
  let addon: QuickAckAddon;
  try {
    addon = createRequire(import.meta.url)(file) as QuickAckAddon;
  } catch (error) {
    return { rearm: undefined, why: `${ADDON_PATH} does not load (${(error as Error).message})` };
  }
  if (typeof addon.quickAck !== 'function') return { rearm: undefined, why: `${ADDON_PATH} has no quickAck` };
  return {
    rearm(socket) {
      const fd = descriptorOf(socket);
      if (fd === undefined) return false;
      try {
        addon.quickAck(fd);
        return true;
      } catch {
        // The socket closed under us (EBADF) or is not TCP: nothing to speed up.
        return false;
      }
    },
  };
}

/**
 * The socket's file descriptor. Node keeps it on the libuv handle (`_handle.fd`, Unix only); it is
 * not public API, so anything unexpected means "no descriptor" and the caller goes without.
 */
function descriptorOf(socket: net.Socket): number | undefined {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : undefined;
}

/** Walks up from this module (in the sources or in dist/) to the directory holding the addon. */
function findAddon(from: string): string | undefined {
  for (let dir = from, i = 0; i < 6; i++, dir = path.dirname(dir)) {
    const candidate = path.join(dir, ADDON_PATH);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}
