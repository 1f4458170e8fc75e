// Loads the addon once and teaches it the facade's error class.
import path from 'node:path';
import type { KelpAddon } from './addon';
import { KelpBpfError } from './errors';

const ADDON = path.join(__dirname, '../../build/Release/kelp.node');

function loadAddon(): KelpAddon {
  try {
    return require(ADDON) as KelpAddon;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') {
      throw new Error(`kelp's native addon is not built (${ADDON} is missing): run \`make build\` in ${path.join(__dirname, '../..')} first`);
    }
    throw e;
  }
}

export const addon = loadAddon();

addon.setErrorClass(KelpBpfError);
