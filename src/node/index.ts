export { createIdentity, type Identity, loadOrCreateIdentity, readIdentity } from "./identity";
export { Lifecycle, type Service } from "./lifecycle";
export { hasPosixModes, unrestrictedWarning } from "./permissions";
export { acquirePidLock, isAgoraProcess, type PidLock, processAlive, readPid } from "./pidfile";
export { CAPABILITIES, NodeRuntime, type NodeRuntimeOptions } from "./runtime";
