/**
 * Every RescueError the image code raises, in one place so that the words stay consistent:
 * each message names the image file, and chunk problems name the chunk, region and offsets.
 */
import { RescueError } from '../errors.ts';

/** Where a chunk lives, for messages and `details`. */
export interface ChunkContext {
  image?: string;
  /** Position in the index. */
  chunk?: number;
  regionId: number;
  windowStart: number;
  /** Disk offset of the window's first used byte, when the manifest is known. */
  diskOffset?: number;
}

export function describeChunk(ctx: ChunkContext): string {
  const parts = [`region ${ctx.regionId}`, `window at ${ctx.windowStart}`];
  if (ctx.diskOffset !== undefined) parts.push(`disk offset ${ctx.diskOffset}`);
  const which = ctx.chunk !== undefined ? `chunk ${ctx.chunk}` : 'a chunk';
  return `${ctx.image ?? 'image'}: ${which} (${parts.join(', ')})`;
}

function chunkDetails(ctx: ChunkContext, extra?: Record<string, unknown>): Record<string, unknown> {
  return {
    image: ctx.image,
    chunk: ctx.chunk,
    region: ctx.regionId,
    windowStart: ctx.windowStart,
    diskOffset: ctx.diskOffset,
    ...extra,
  };
}

export function chunkCorrupt(ctx: ChunkContext, why: string): RescueError {
  return new RescueError(
    'E_CHUNK_CORRUPT',
    `${describeChunk(ctx)} is damaged: ${why}`,
    'The image file was altered after it was written (failing storage, an incomplete copy). Nothing ' +
      'from this chunk was written anywhere. Restore from another copy of the image or an older backup point; ' +
      '`rescue check` lists every damaged chunk.',
    chunkDetails(ctx, { why }),
  );
}

export function recordCorrupt(ctx: ChunkContext, why: string): RescueError {
  return new RescueError(
    'E_RECORD_CORRUPT',
    `${describeChunk(ctx)}: its record header is damaged (${why}); the chunk's data itself verifies`,
    'The data of the chunk is intact and restores correctly, but the image file is decaying at this spot: ' +
      'copy the image to healthy storage.',
    chunkDetails(ctx, { why }),
  );
}

export function pointRequired(ctx: ChunkContext, pointId: string): RescueError {
  return new RescueError(
    'E_POINT_REQUIRED',
    `${describeChunk(ctx)} is stored in the earlier backup point ${pointId}, which was not opened`,
    'Open the image through its backup chain (all earlier points of the chain must be present).',
    chunkDetails(ctx, { pointId }),
  );
}

export function imageNotFound(path: string): RescueError {
  return new RescueError(
    'E_IMAGE_NOT_FOUND',
    `${path} does not exist`,
    'Check the path and the name of the image file (NAME.rimg).',
    { image: path },
  );
}

export function notAnImage(path: string, why: string): RescueError {
  return new RescueError(
    'E_NOT_AN_IMAGE',
    `${path} is not a Rescue image: ${why}`,
    'Choose a .rimg file written by Rescue.',
    { image: path },
  );
}

export function imageIncomplete(path: string, why: string): RescueError {
  return new RescueError(
    'E_IMAGE_INCOMPLETE',
    `${path} is an interrupted backup: ${why}`,
    'The backup that wrote it did not finish (it was cancelled, crashed or lost power). It cannot be ' +
      'restored from; delete the *.partial files and run the backup again.',
    { image: path },
  );
}

export function volumeMissing(image: string, volume: number, file: string): RescueError {
  return new RescueError(
    'E_VOLUME_MISSING',
    `${image}: volume ${volume} (${file}) is missing`,
    'Copy every volume file of the image (NAME.rimg, NAME.rimg.2, …) into the same folder.',
    { image, volume, file },
  );
}

export function volumeTruncated(
  image: string,
  volume: number,
  file: string,
  size: number,
  expected: number,
): RescueError {
  return new RescueError(
    'E_VOLUME_TRUNCATED',
    `${image}: volume ${volume} (${file}) has ${size} bytes, but ${expected} were written — it is truncated`,
    'The file was copied incompletely or the storage lost data. Copy the volume again from the original.',
    { image, volume, file, size, expected },
  );
}

export function volumeMismatch(image: string, volume: number, file: string, why: string): RescueError {
  return new RescueError(
    'E_VOLUME_MISMATCH',
    `${image}: volume ${volume} (${file}) does not belong to this image: ${why}`,
    'A volume file of another backup has the same name. Put the right volume files of this image together.',
    { image, volume, file, why },
  );
}

export function headerCorrupt(image: string, why: string, file?: string): RescueError {
  return new RescueError(
    'E_HEADER_CORRUPT',
    `${image}: the ${file && file !== image ? `volume header of ${file}` : 'image header'} is damaged: ${why}`,
    'The start of the image file was altered or overwritten. The image cannot be used; restore from ' +
      'another copy.',
    { image, file, why },
  );
}

export function trailerCorrupt(image: string, why: string): RescueError {
  return new RescueError(
    'E_TRAILER_CORRUPT',
    `${image}: the trailer at the end of the image is damaged: ${why}`,
    'The end of the image file was altered. The image cannot be used; restore from another copy.',
    { image, why },
  );
}

export function indexCorrupt(image: string, why: string): RescueError {
  return new RescueError(
    'E_INDEX_CORRUPT',
    `${image}: the chunk index is damaged: ${why}`,
    'The image cannot be restored through its index; restore from another copy of the image.',
    { image, why },
  );
}

export function manifestCorrupt(image: string, why: string): RescueError {
  return new RescueError(
    'E_MANIFEST_CORRUPT',
    `${image}: the manifest (disk layout and used maps) is damaged: ${why}`,
    'The image cannot be restored without its manifest; restore from another copy of the image.',
    { image, why },
  );
}

export function formatVersion(image: string, version: number): RescueError {
  return new RescueError(
    'E_FORMAT_VERSION',
    `${image} uses image format version ${version}; this rescue reads version 1`,
    'Use a newer version of rescue to read this image.',
    { image, version },
  );
}

export function passwordRequired(image: string): RescueError {
  return new RescueError(
    'E_PASSWORD_REQUIRED',
    `${image} is encrypted; a password is needed`,
    'Give the password the backup was made with.',
    { image },
  );
}

export function wrongPassword(image: string): RescueError {
  return new RescueError(
    'E_WRONG_PASSWORD',
    `Wrong password for ${image}`,
    'Give the password the backup was made with (passwords are case-sensitive).',
    { image },
  );
}

export function passwordInvalid(why: string, image?: string): RescueError {
  return new RescueError(
    'E_PASSWORD_INVALID',
    `The password${image ? ` for ${image}` : ''} is not usable: ${why}`,
    'Use a password of 1 to 64 characters.',
    image ? { image } : undefined,
  );
}

export function regionNotFound(image: string, regionId: number): RescueError {
  return new RescueError(
    'E_REGION_NOT_FOUND',
    `${image} has no region ${regionId}`,
    'This is a bug in the caller; please report it.',
    { image, region: regionId },
  );
}

export function regionRange(image: string, regionId: number, offset: number, length: number, size: number) {
  return new RescueError(
    'E_BAD_RANGE',
    `${image}: bytes ${offset}+${length} lie outside region ${regionId} (${size} bytes)`,
    'This is a bug in the caller; please report it.',
    { image, region: regionId, offset, length, size },
  );
}

export function imageRead(image: string, file: string, offset: number, why: string): RescueError {
  return new RescueError(
    'E_IMAGE_READ',
    `${image}: reading ${file} at offset ${offset} failed: ${why}`,
    'The storage holding the image reports errors: copy the image to healthy storage and try again.',
    { image, file, offset, why },
  );
}

export function imageExists(path: string): RescueError {
  return new RescueError(
    'E_IMAGE_EXISTS',
    `${path} already exists`,
    'Choose another name or folder; an existing image is never overwritten.',
    { image: path },
  );
}

export function splitTooSmall(bytes: number, min: number): RescueError {
  return new RescueError(
    'E_SPLIT_TOO_SMALL',
    `A split size of ${bytes} bytes is too small (the minimum is ${min} bytes, 50 MiB)`,
    'Choose a split size of at least 50 MiB, or none.',
    { split: bytes, min },
  );
}

export function nameInvalid(name: string, why: string): RescueError {
  return new RescueError(
    'E_IMAGE_NAME_INVALID',
    `"${name}" cannot be used as an image name: ${why}`,
    "Use a plain file name of at most 200 bytes without '/'.",
    { name },
  );
}

export function destinationInvalid(dir: string, why: string): RescueError {
  return new RescueError(
    'E_DESTINATION_INVALID',
    `${dir} cannot hold the image: ${why}`,
    'Choose an existing, writable folder.',
    { dir },
  );
}

export function destinationFull(image: string, file: string, written: number): RescueError {
  return new RescueError(
    'E_DESTINATION_FULL',
    `The destination of ${image} is full: writing ${file} failed after ${written} bytes of the image; ` +
      'the incomplete files were removed',
    'Free space on the destination, choose another destination, or use higher compression.',
    { image, file, written },
  );
}

export function imageWrite(image: string, file: string, written: number, why: string): RescueError {
  return new RescueError(
    'E_IMAGE_WRITE',
    `Writing ${file} of ${image} failed after ${written} bytes: ${why}; the incomplete files were removed`,
    'Check the destination (is it still attached and writable?) and run the backup again.',
    { image, file, written, why },
  );
}

export function commentTooLong(chars: number, max: number): RescueError {
  return new RescueError(
    'E_COMMENT_TOO_LONG',
    `The comment has ${chars} characters; at most ${max} are allowed`,
    'Shorten the comment.',
    { chars, max },
  );
}

export function optionInvalid(what: string, why: string): RescueError {
  return new RescueError(
    'E_IMAGE_OPTION_INVALID',
    `Invalid image option ${what}: ${why}`,
    'This is a bug in the caller; please report it.',
    { option: what, why },
  );
}

export function cancelled(image: string): RescueError {
  return new RescueError('E_CANCELLED', `Checking ${image} was cancelled`, 'Run it again when you want to.', {
    image,
  });
}

export function internal(what: string, details?: Record<string, unknown>): RescueError {
  return new RescueError(
    'E_INTERNAL',
    what,
    'This is a bug; please report it with RESCUE_DEBUG=1 output.',
    details,
  );
}
