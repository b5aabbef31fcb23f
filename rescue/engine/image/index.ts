/** The Rescue image format: writer, reader, chunk codec, used-map codec and check. */
export { type CheckOptions, checkImage } from './check.ts';
export { ChunkCodec, type ChunkCodecOptions } from './codec.ts';
export { type ChunkContext, describeChunk } from './failures.ts';
export { deriveKey, validatePassword } from './keys.ts';
export { ImageReader, type ImageReaderOptions } from './reader.ts';
export * from './types.ts';
export { decodeUsedMap, encodeUsedMap, UsedLayout, type WindowPlan, windowsOf } from './used-map.ts';
export { destinationIsFat, isFatMount, VolumeLayout } from './volumes.ts';
export {
  type FinishResult,
  ImageWriter,
  type ImageWriterOptions,
  type ManifestInput,
  validateComment,
  validateImageName,
} from './writer.ts';
