/**
 * Cluster chains and cluster reads, shared by the FAT and exFAT file readers: both number the
 * clusters of their data area (the cluster heap) from 2 and link them through a FAT. Every chain is
 * bounded by the length its entry implies, so a looping or cross-linked FAT ends in
 * E_METADATA_CORRUPT, not a hang.
 */
import type { BlockSource } from '../../devices/source.ts';
import { corrupt } from '../../errors.ts';

/** Number of the first cluster of the data area, on FAT and exFAT alike. */
const FIRST_CLUSTER = 2;
/** Runs of consecutive clusters are read this many bytes at a time at most. */
const READ_CHUNK = 4 * 1024 * 1024;

export interface ClusterHeap {
  src: BlockSource;
  /** Byte offset of cluster 2 from the volume's first byte. */
  start: number;
  clusterBytes: number;
  clusterCount: number;
  /** The FAT entry of cluster `n`. */
  entry(n: number): Promise<number>;
  /** Whether FAT entry value `v` ends a chain. */
  endsChain(v: number): boolean;
}

export interface ChainOptions {
  /** Exactly this many clusters (a chain ending earlier is corrupt). */
  count?: number;
  /** Without `count`: the most clusters the chain may have before it is taken as a loop. */
  max: number;
  /** The `count` clusters from the first on, without reading the FAT (exFAT's NoFatChain). */
  contiguous?: boolean;
}

export class ClusterChains {
  private readonly heap: ClusterHeap;

  constructor(heap: ClusterHeap) {
    this.heap = heap;
  }

  valid(c: number): boolean {
    return c >= FIRST_CLUSTER && c <= this.heap.clusterCount + 1;
  }

  /**
   * The chain from `first`: exactly `count` clusters when given (a shorter chain is corrupt), else
   * up to the end-of-chain mark but never more than `max`.
   */
  async chain(first: number, what: string, opts: ChainOptions): Promise<number[]> {
    const { heap } = this;
    const last = heap.clusterCount + 1;
    if (!this.valid(first)) throw corrupt(what, `first cluster ${first} is outside 2..${last}`);
    if (opts.contiguous) {
      const count = opts.count ?? 0;
      if (first + count - 1 > last) throw corrupt(what, 'runs past the cluster heap');
      return Array.from({ length: count }, (_, i) => first + i);
    }
    const limit = opts.count ?? opts.max;
    const out = [first];
    let c = first;
    while (out.length < limit) {
      const next = await heap.entry(c);
      if (heap.endsChain(next)) {
        if (opts.count !== undefined)
          throw corrupt(what, `cluster chain ends after ${out.length} of ${opts.count} clusters`);
        return out;
      }
      if (!this.valid(next))
        throw corrupt(what, `cluster ${c} links to invalid cluster 0x${next.toString(16)}`);
      out.push(next);
      c = next;
    }
    if (opts.count === undefined && !heap.endsChain(await heap.entry(c)))
      throw corrupt(what, `cluster chain is longer than ${opts.max} clusters (it may loop)`);
    return out;
  }

  /**
   * `length` bytes from the clusters in order, runs of consecutive clusters joined into one read;
   * bytes from `valid` on are zeros.
   */
  async read(clusters: readonly number[], length: number, valid = length): Promise<Buffer> {
    const { clusterBytes, start, src } = this.heap;
    const out = Buffer.alloc(length);
    const end = Math.min(length, valid);
    for (let i = 0; i < clusters.length && i * clusterBytes < end; ) {
      let j = i + 1;
      while (
        j < clusters.length &&
        clusters[j] === clusters[j - 1] + 1 &&
        (j - i + 1) * clusterBytes <= READ_CHUNK
      )
        j++;
      const bytes = Math.min((j - i) * clusterBytes, end - i * clusterBytes);
      const data = await src.read(start + (clusters[i] - FIRST_CLUSTER) * clusterBytes, bytes);
      data.copy(out, i * clusterBytes);
      i = j;
    }
    return out;
  }
}
