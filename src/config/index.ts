export type { LoadedConfig, LoadOptions } from "./load";
export { closestName, envName, keyLines, loadConfig, restartRequiredChanges } from "./load";
export { MASK, maskSecrets, renderDefaultConfig, renderEffectiveConfig } from "./render";
export type { AgoraConfig, KeySpec, NodeMode, SectionName } from "./schema";
export { checkMultiaddrText, defaultConfig, defaultDataDir, NODE_MODES, SCHEMA, specFor } from "./schema";
