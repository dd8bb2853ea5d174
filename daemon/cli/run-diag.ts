/** `cardlink diag`: writes the diagnostics bundle (no secrets) for a support request. */
import { writeDiagnostics } from '../diag/diagnostics.js';
import { configFrom, out } from './cli-common.js';
import type { DiagArgs } from './daemon-commands.js';

export async function runDiag(args: DiagArgs): Promise<void> {
  const config = configFrom(args);
  const file = args.output ?? `cardlink-diag-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
  const written = await writeDiagnostics(config, file);
  out(`Diagnostics written to ${written} (no tokens, PINs or keys; review before sending).`);
}
