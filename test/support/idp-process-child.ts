/**
 * The child of idp-process.ts: starts the test IdP with the options in argv[2] (JSON), reports
 * its identity, then carries out requests from the parent one message each.
 */
import { startTestIdp, type MintOptions, type StartTestIdpOptions, type TokenSet } from './oidc-provider.js';

export interface IdpChildReady {
  readonly issuer: string;
  readonly resource: string;
  readonly clientId: string;
}

export type IdpChildRequest =
  | { id: number; op: 'login'; options: { account?: string; password?: string } }
  | {
      id: number;
      op: 'approveDeviceCode';
      userCode: string;
      options: { account?: string; verificationUri?: string };
    }
  | { id: number; op: 'mintAccessToken'; options: MintOptions }
  | { id: number; op: 'close' };

export type IdpChildReply =
  { id: number; ok: true; result: TokenSet | string | null } | { id: number; ok: false; error: string };

const options = JSON.parse(process.argv[2] ?? '{}') as StartTestIdpOptions;
const idp = await startTestIdp(options);
process.send!({ issuer: idp.issuer, resource: idp.resource, clientId: idp.clientId } satisfies IdpChildReady);

process.on('message', (request: IdpChildRequest) => {
  void (async (): Promise<void> => {
    try {
      switch (request.op) {
        case 'login':
          return reply({ id: request.id, ok: true, result: await idp.login(request.options) });
        case 'approveDeviceCode':
          await idp.approveDeviceCode(request.userCode, request.options);
          return reply({ id: request.id, ok: true, result: null });
        case 'mintAccessToken':
          return reply({ id: request.id, ok: true, result: await idp.mintAccessToken(request.options) });
        case 'close':
          await idp.close();
          process.disconnect();
          return;
      }
    } catch (error) {
      reply({ id: request.id, ok: false, error: error instanceof Error ? error.message : String(error) });
    }
  })();
});

function reply(message: IdpChildReply): void {
  process.send!(message);
}
