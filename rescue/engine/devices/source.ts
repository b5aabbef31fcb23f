import { constants, promises as fsp } from 'node:fs';
import { RescueError } from '../errors.ts';

/**
 * "Something with sectors": a block device, an image file, a partition inside either, or bytes in
 * memory. Reads are exact: asking past the end is an error, never a silent short buffer.
 */
export interface BlockSource {
  /** What a person would call it: /dev/sda, /srv/disk.img, /srv/disk.img:2 */
  readonly path: string;
  readonly size: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly writable: boolean;
  read(offset: number, length: number): Promise<Buffer>;
  write?(offset: number, data: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

function checkRange(src: { path: string; size: number }, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new RescueError(
      'E_BAD_RANGE',
      `Invalid read range on ${src.path}`,
      'This is a bug; please report it.',
      {
        offset,
        length,
      },
    );
  }
  if (offset + length > src.size) {
    throw new RescueError(
      'E_READ_BEYOND_END',
      `Read of ${length} bytes at offset ${offset} goes past the end of ${src.path} (${src.size} bytes)`,
      'The partition table or filesystem claims more space than the disk has: the disk may be ' +
        'truncated (an incomplete image file) or the metadata damaged.',
      { offset, length, size: src.size },
    );
  }
}

export class BufferSource implements BlockSource {
  readonly path: string;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly writable = true;
  readonly bytes: Buffer;

  constructor(bytes: Uint8Array, path = '<memory>', sectorSize = 512) {
    this.bytes = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.path = path;
    this.logicalSectorSize = sectorSize;
    this.physicalSectorSize = sectorSize;
  }
  get size(): number {
    return this.bytes.length;
  }
  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length);
    return Buffer.from(this.bytes.subarray(offset, offset + length));
  }
  async write(offset: number, data: Uint8Array): Promise<void> {
    checkRange(this, offset, data.length);
    this.bytes.set(data, offset);
  }
  async close(): Promise<void> {}
}

/** An image file or a block device opened by path. */
export class FileSource implements BlockSource {
  readonly path: string;
  readonly size: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly writable: boolean;
  readonly isBlockDevice: boolean;
  private readonly handle: fsp.FileHandle;

  private constructor(
    path: string,
    handle: fsp.FileHandle,
    size: number,
    sectors: { logical: number; physical: number },
    writable: boolean,
    isBlockDevice: boolean,
  ) {
    this.path = path;
    this.handle = handle;
    this.size = size;
    this.logicalSectorSize = sectors.logical;
    this.physicalSectorSize = sectors.physical;
    this.writable = writable;
    this.isBlockDevice = isBlockDevice;
  }

  static async open(path: string, opts: { writable?: boolean } = {}): Promise<FileSource> {
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(path, opts.writable ? constants.O_RDWR : constants.O_RDONLY);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        throw new RescueError(
          'E_NOT_FOUND',
          `${path} does not exist`,
          'Check the path; `rescue list` shows disks.',
        );
      }
      if (code === 'EACCES' || code === 'EPERM') {
        const asRoot = process.getuid?.() === 0;
        throw new RescueError(
          'E_PERMISSION',
          `No permission to open ${path}`,
          asRoot
            ? 'The system refuses access even to root: a container, sandbox or security module (SELinux, AppArmor, lockdown) stands in the way.'
            : 'Run rescue as root.',
        );
      }
      throw new RescueError(
        'E_OPEN',
        `Cannot open ${path}: ${(e as Error).message}`,
        'Check the device or file.',
      );
    }
    try {
      const st = await handle.stat();
      if (st.isBlockDevice()) {
        const { blockDeviceGeometry } = await import('./sysfs.ts');
        const geo = await blockDeviceGeometry(st.rdev);
        return new FileSource(path, handle, geo.size, geo, !!opts.writable, true);
      }
      if (!st.isFile()) {
        throw new RescueError(
          'E_NOT_A_DISK',
          `${path} is neither a block device nor a regular file`,
          'Give a disk such as /dev/sda or an image file.',
        );
      }
      return new FileSource(path, handle, st.size, { logical: 512, physical: 512 }, !!opts.writable, false);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length);
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      let n: number;
      try {
        ({ bytesRead: n } = await this.handle.read(buf, done, length - done, offset + done));
      } catch (e) {
        throw new RescueError(
          'E_READ',
          `Read error on ${this.path} at offset ${offset + done}: ${(e as Error).message}`,
          'The disk may be failing. Try a sector-by-sector backup with error skipping, or check the cable.',
          { offset: offset + done },
        );
      }
      if (n === 0) {
        throw new RescueError(
          'E_SHORT_READ',
          `${this.path} ended early at offset ${offset + done}`,
          'The disk or image file shrank while it was being read.',
        );
      }
      done += n;
    }
    return buf;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (!this.writable) {
      throw new RescueError(
        'E_READ_ONLY',
        `${this.path} was opened read-only`,
        'This is a bug; please report it.',
      );
    }
    checkRange(this, offset, data.length);
    let done = 0;
    while (done < data.length) {
      let n: number;
      try {
        ({ bytesWritten: n } = await this.handle.write(data, done, data.length - done, offset + done));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        throw new RescueError(
          code === 'ENOSPC' ? 'E_TARGET_FULL' : 'E_WRITE',
          `Write error on ${this.path} at offset ${offset + done}: ${(e as Error).message}`,
          code === 'ENOSPC'
            ? 'The filesystem holding the target image file is full: free space or choose another place.'
            : 'The target disk reported an error: it may be failing, or was unplugged.',
          { offset: offset + done },
        );
      }
      done += n;
    }
  }

  /** Flushes written data to the device (fsync): a restore is not done until this returns. */
  async sync(): Promise<void> {
    try {
      await this.handle.sync();
    } catch (e) {
      throw new RescueError(
        'E_WRITE',
        `Flushing ${this.path} failed: ${(e as Error).message}`,
        'The target disk reported an error while data was being written to it: it may be failing.',
      );
    }
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

/** A window onto a larger source: a partition, seen from its first byte. Closing it does not close the parent. */
export class SliceSource implements BlockSource {
  readonly path: string;
  readonly size: number;
  readonly parent: BlockSource;
  readonly offset: number;

  constructor(parent: BlockSource, offset: number, size: number, path?: string) {
    if (offset < 0 || size < 0 || offset + size > parent.size) {
      throw new RescueError(
        'E_PARTITION_BEYOND_DISK',
        `Region at ${offset} of ${size} bytes lies outside ${parent.path} (${parent.size} bytes)`,
        'The partition table describes space the disk does not have: the image may be truncated.',
        { offset, size, diskSize: parent.size },
      );
    }
    this.parent = parent;
    this.offset = offset;
    this.size = size;
    this.path = path ?? `${parent.path}@${offset}`;
  }
  get logicalSectorSize(): number {
    return this.parent.logicalSectorSize;
  }
  get physicalSectorSize(): number {
    return this.parent.physicalSectorSize;
  }
  get writable(): boolean {
    return this.parent.writable;
  }
  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length);
    return this.parent.read(this.offset + offset, length);
  }
  async write(offset: number, data: Uint8Array): Promise<void> {
    checkRange(this, offset, data.length);
    if (!this.parent.write)
      throw new RescueError('E_READ_ONLY', `${this.path} is read-only`, 'This is a bug; please report it.');
    await this.parent.write(this.offset + offset, data);
  }
  async close(): Promise<void> {}
}
