export { NodeRuntime, CAPABILITIES, type NodeRuntimeOptions } from "./runtime";
export { loadOrCreateIdentity, readIdentity, createIdentity, type Identity } from "./identity";
export { acquirePidLock, readPid, processAlive, isAgoraProcess, type PidLock } from "./pidfile";
export { Lifecycle, type Service } from "./lifecycle";
export { hasPosixModes, unrestrictedWarning } from "./permissions";
