// Numbers and names for people, in the reader's locale.

const locale = navigator.language || undefined;
const count = new Intl.NumberFormat(locale, { maximumFractionDigits: 0 });
const hoursFmt = new Intl.NumberFormat(locale, {
  style: 'unit',
  unit: 'hour',
  unitDisplay: 'long',
  maximumFractionDigits: 1,
});
const minutesFmt = new Intl.NumberFormat(locale, {
  style: 'unit',
  unit: 'minute',
  unitDisplay: 'long',
  maximumFractionDigits: 1,
});
const percentFmt = new Intl.NumberFormat(locale, { style: 'percent', maximumFractionDigits: 1 });
const mbpsFmt = new Intl.NumberFormat(locale, {
  style: 'unit',
  unit: 'megabit-per-second',
  maximumFractionDigits: 2,
});
const regions = new Intl.DisplayNames(locale ? [locale] : undefined, { type: 'region' });

const NONE = '–';
const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

export const fmt = {
  count: (v) => (isNum(v) ? count.format(v) : NONE),
  /** Seconds of watch time, shown in hours. */
  hours: (seconds) => (isNum(seconds) ? hoursFmt.format(seconds / 3600) : NONE),
  /** Seconds per play, shown in minutes. */
  minutes: (seconds) => (isNum(seconds) ? minutesFmt.format(seconds / 60) : NONE),
  /** A ratio from 0 to 1. */
  percent: (v) => (isNum(v) ? percentFmt.format(v) : NONE),
  /** Kilobits per second, shown in megabits per second. */
  bitrate: (kbps) => (isNum(kbps) ? mbpsFmt.format(kbps / 1000) : NONE),
};

/** "Brazil (BR)" for "BR"; the code alone where the browser has no name for it. */
export function countryName(code) {
  if (!code) return NONE;
  try {
    const name = regions.of(code);
    return name && name !== code ? `${name} (${code})` : code;
  } catch {
    return code;
  }
}

const DEVICES = { tv: 'TV' };

export function deviceName(device) {
  return device ? DEVICES[device] || device.charAt(0).toUpperCase() + device.slice(1) : NONE;
}

export function genreName(genre) {
  return genre ? genre.charAt(0).toUpperCase() + genre.slice(1) : NONE;
}

/** A title's name when the API gives one, else its content id. */
export function titleName(row) {
  return row.title || row.content_id || NONE;
}

/** "2026-11-03" or "2026-11-03 14:00" for a bucket label of the API. */
export function bucketName(label) {
  return label.length > 10 ? `${label.slice(0, 10)} ${label.slice(11, 16)}` : label;
}
