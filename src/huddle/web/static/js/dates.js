// Due dates. The API's `dueDate` is an instant (ISO-8601 UTC); the board edits
// a calendar day. A day picked here is stored as that day at 00:00 UTC, so
// every member sees the same day whatever their time zone, and the task is
// overdue once that day has ended where the reader is. A due instant set
// through the API at another time of day is shown, and judged, as that moment
// in the reader's time zone, and left as it is unless the day is changed.

const DAY = /^(\d{4})-(\d{2})-(\d{2})$/;

/** Whether an ISO instant is exactly midnight UTC: a calendar day picked in the board. */
function isDay(date) {
  return (
    date.getUTCHours() === 0 &&
    date.getUTCMinutes() === 0 &&
    date.getUTCSeconds() === 0 &&
    date.getUTCMilliseconds() === 0
  );
}

function parse(iso) {
  if (typeof iso !== "string" || !iso) return null;
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? null : date;
}

function pad(number) {
  return String(number).padStart(2, "0");
}

function localDay(date) {
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

/** The `<input type="date">` value ("YYYY-MM-DD", or "") for a task's `dueDate`. */
export function dayOf(iso) {
  const date = parse(iso);
  if (!date) return "";
  if (isDay(date)) return date.toISOString().slice(0, 10);
  return localDay(date);
}

/** The `dueDate` to send for an input value: that day at 00:00 UTC, or null. */
export function dueFromDay(day) {
  const match = DAY.exec(day ?? "");
  return match ? `${match[1]}-${match[2]}-${match[3]}T00:00:00.000Z` : null;
}

/** "Mar 5" (a day; with the year when it is not this one), or "Mar 5, 14:30" (an instant). */
export function dueLabel(iso, now = new Date()) {
  const date = parse(iso);
  if (!date) return "";
  const day = isDay(date);
  const year = day ? date.getUTCFullYear() : date.getFullYear();
  const options = { month: "short", day: "numeric" };
  if (year !== now.getFullYear()) options.year = "numeric";
  if (day) return date.toLocaleDateString(undefined, { ...options, timeZone: "UTC" });
  return date.toLocaleString(undefined, { ...options, hour: "2-digit", minute: "2-digit" });
}

/** "overdue", "today", or "" for a task (a done task is never overdue). */
export function dueState(task, now = new Date()) {
  const date = parse(task?.dueDate);
  if (!date || task.status === "done") return "";
  if (isDay(date)) {
    const due = date.toISOString().slice(0, 10);
    const today = localDay(now);
    if (due < today) return "overdue";
    return due === today ? "today" : "";
  }
  if (date <= now) return "overdue";
  return localDay(date) === localDay(now) ? "today" : "";
}

/** "12 s", "3 min 5 s", "1 h 2 min": how long ago / until, for the offline banner. */
export function duration(ms) {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${seconds % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** "14:05:09" in the reader's time zone. */
export function clock(ms) {
  return new Date(ms).toLocaleTimeString(undefined, {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}
