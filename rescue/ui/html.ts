/** htm bound to preact's h: templates without a build-time JSX step. */
import htm from 'htm';
import { h } from 'preact';

export const html = htm.bind(h);

/** The value of the input an event came from. */
export const inputValue = (e: Event): string => (e.target as HTMLInputElement).value;
