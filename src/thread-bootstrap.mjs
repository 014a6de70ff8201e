// Worker threads do not inherit tsx's loader hooks on Node 20: register them here, then load
// the TypeScript entry named in argv (plain JS, so Node can start it without a loader).
import { register } from 'tsx/esm/api';

register();
await import(process.argv[2]);
