/** Resilient Change Tracking: the public API (see docs/design.md (rct section)). */
export { ChangeTracker, rctPathOf, mrtPathOf, type RctStatus, type TrackerOptions, type TrackerMode, type OpenVerdict } from './ChangeTracker.js';
export { trackingLayer, openTracked, isTracked, type TrackedDevice } from './trackingLayer.js';
export { openTrackedDisk, isTrackingEnabled } from './openTrackedDisk.js';
export { enableTracking, disableTracking, type EnableOptions } from './enableTracking.js';
export { trackingStatus } from './trackingStatus.js';
export { startControlServer, controlClient, controlSocketPath, type ControlServer, type ControlClient } from './control.js';
export { openRctHandle, type RctHandle } from './openRctHandle.js';
export { TrackingInvalidError, TrackingNotEnabledError, UnknownRctIdError } from './errors.js';
export type { Range } from './Range.js';
export { withTrackedOperation, type TrackedOperationPlan, type TrackedOperationReport } from './withTrackedOperation.js';
