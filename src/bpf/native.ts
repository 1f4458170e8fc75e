// Loads the addon once and teaches it the facade's error class.
import path from 'node:path';
import type { KelpAddon } from './addon';
import { KelpBpfError } from './errors';

export const addon = require(path.join(__dirname, '../../build/Release/kelp.node')) as KelpAddon;

addon.setErrorClass(KelpBpfError);
