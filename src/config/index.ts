export type { AgoraConfig, NodeMode, KeySpec, SectionName } from "./schema";
export { NODE_MODES, SCHEMA, defaultConfig, specFor, defaultDataDir, checkMultiaddrText } from "./schema";
export type { LoadOptions, LoadedConfig } from "./load";
export { loadConfig, envName, restartRequiredChanges, keyLines, closestName } from "./load";
export { renderDefaultConfig, renderEffectiveConfig, maskSecrets, MASK } from "./render";
