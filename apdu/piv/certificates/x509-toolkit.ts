/**
 * The one X.509 toolkit (docs/x509.md): @peculiar/x509, re-exported. Import it from here, never
 * from the package: the toolkit finds its algorithms through tsyringe, which refuses to load
 * without the Reflect metadata API, so this module loads that polyfill first (an ES module
 * evaluates its imports in order). The polyfill only adds functions to the global Reflect.
 */
import 'reflect-metadata';

export * from '@peculiar/x509';
