// Worker threads do not inherit tsx's loader hooks on Node 20: register them here, then load
// the TypeScript entry named in argv (plain JS, so Node can start it without a loader).
// Piscina calls this module's default export, so the entry's default export is passed on.
import { register } from 'tsx/esm/api';

register();
const entry = await import(process.argv[2]);
export default entry.default;
