// Event ids: UUIDv7 (48-bit millisecond timestamp first), so id order is time order.
import { v7 } from 'uuid';

export const newEventId = (): string => v7();

export const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The smallest UUIDv7 of millisecond `ms`: every id generated before that millisecond sorts below it. */
export function idFloor(ms: number): string {
  const hex = ms.toString(16).padStart(12, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-0000-0000-000000000000`;
}
