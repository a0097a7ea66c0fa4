/** A byte range of the virtual disk: [offset, offset + length). Lists of them are sorted and merged. */
export interface Range {
  offset: number;
  length: number;
}
