/** `cardlink status`, `cards` and `logout`: one request to the running daemon, its answer printed. */
import type { CardStatus, DaemonStatus } from '../control/control-protocol.js';
import { configFrom, out, withDaemon } from './cli-common.js';
import type { CommonArgs, EnrollArgs, JsonArgs } from './daemon-commands.js';

function describeCard(c: CardStatus): string {
  const where =
    c.state === 'inserted'
      ? `in "${c.readerName ?? `slot ${c.slot}`}"`
      : c.state === 'taken-over'
        ? `taken over by ${c.takenOverBy ?? 'another device'}`
        : 'not in the reader';
  const blocked = [c.pinBlocked && 'PIN blocked', c.pukBlocked && 'PUK blocked'].filter(Boolean).join(', ');
  return `${c.label} (${c.cardId}): ${where}${blocked ? ` (${blocked})` : ''}`;
}

function describeStatus(s: DaemonStatus): string[] {
  const lines = [`state: ${s.state}`, `server: ${s.serverUrl}`];
  if (s.user) lines.push(`user: ${s.user}`);
  if (s.deviceId)
    lines.push(`device: ${s.deviceId}${s.deviceStatus === 'pending' ? ' (waiting for approval)' : ''}`);
  if (s.tokenExpiresAt) lines.push(`token expires: ${new Date(s.tokenExpiresAt * 1000).toISOString()}`);
  if (s.lastError) lines.push(`last error: ${s.lastError.message} [${s.lastError.code}]`);
  lines.push(s.cards.length ? 'cards:' : 'cards: none');
  for (const c of s.cards) lines.push(`  ${describeCard(c)}`);
  return lines;
}

export async function runStatus(args: JsonArgs): Promise<void> {
  const status = await withDaemon(configFrom(args), (c) => c.request('status'));
  if (args.json) process.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
  else for (const line of describeStatus(status)) out(line);
}

export async function runCards(args: JsonArgs): Promise<void> {
  const cards = await withDaemon(configFrom(args), (c) => c.request('cards'));
  if (args.json) process.stdout.write(`${JSON.stringify(cards, null, 2)}\n`);
  else if (cards.length === 0) out('no cards');
  else for (const c of cards) out(describeCard(c));
}

export async function runLogout(args: CommonArgs): Promise<void> {
  await withDaemon(configFrom(args), (c) => c.request('logout'));
  out('Logged out.');
}

/**
 * `cardlink enroll`: the card server issues the certificates of the card's profile, with the
 * names from the user's sign-in (never from this command line), if the profile allows it.
 */
export async function runEnroll(args: EnrollArgs): Promise<void> {
  const result = await withDaemon(configFrom(args), (c) =>
    c.request('enroll', args.card === undefined ? {} : { cardId: args.card }),
  );
  out(
    `${result.label} (${result.cardId}): ${result.certificates} certificates issued; they are in the reader now.`,
  );
}
