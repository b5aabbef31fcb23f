/** One write of a plan: `bytes` at byte `offset` of the target disk. Plans are lists of these. */
export interface DiskWrite {
  offset: number;
  bytes: Buffer;
  /** For logs and plans shown to people ("GPT backup header"). */
  what: string;
}
