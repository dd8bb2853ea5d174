/**
 * The demo's two URLs, from its ports alone: both are fixed for the life of a state directory (the
 * issuer names the demo user's identity, the server URL is the tokens' audience), and the daemon's
 * config is written from them before the IdP and the server run.
 */
import { LOCAL_IDP_HOST } from './idp/local-idp.js';

/** The demo card server on `port`. */
export const demoServerUrl = (port: number): string => `https://127.0.0.1:${port}/`;

/** The demo IdP's issuer on `port` (what startLocalIdp reports). */
export const demoIssuer = (port: number): string => `http://${LOCAL_IDP_HOST}:${port}`;
