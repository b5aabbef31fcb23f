/** The Rescue image format: writer, reader, chunk codec, used-map codec and check. */
export {
  BackupChain,
  type ChainCheckOptions,
  type ChainPoint,
  checkChain,
  type MissingPoint,
  type OpenChainOptions,
  type PointStatus,
} from './chain.ts';
export { type CheckOptions, checkImage } from './check.ts';
export { ChunkCodec, type ChunkCodecOptions, isAllZero, zeroSha256 } from './codec.ts';
export { applyPatch, makePatch, patchProblem } from './delta.ts';
export { type ChunkContext, describeChunk } from './failures.ts';
export { deriveKey, validatePassword } from './keys.ts';
export { sha256Async } from './layout.ts';
export { ImageReader, type ImageReaderOptions, readImageHeader } from './reader.ts';
export * from './types.ts';
export {
  decodeUsedMap,
  encodeUsedMap,
  keepPreviousLayout,
  UsedLayout,
  type WindowPlan,
  windowsOf,
} from './used-map.ts';
export { destinationIsFat, isFatMount, VolumeLayout } from './volumes.ts';
export {
  type FinishResult,
  ImageWriter,
  type ImageWriterOptions,
  type ManifestInput,
  validateComment,
  validateImageName,
} from './writer.ts';
