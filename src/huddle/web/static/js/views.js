// Drawing the page from the store. Every piece of data is set as text (see dom.js).

import { byId, el, show } from "./dom.js";
import { STATUSES } from "./store.js";

const STATE_LABELS = new Set(["connected", "refreshing token", "degraded", "offline"]);
const STATE_HINTS = {
  connected: "Live updates are on.",
  "refreshing token": "Renewing your session; live updates continue in a moment.",
  degraded: "Connected, but the server could not load fresh data; it will catch up.",
  offline: "Not connected: changes by others appear when the connection returns.",
};
const TOAST_MS = 6_000;

let toastTimer = null;

export function showConnection(state) {
  const badge = byId("connection");
  const name = STATE_LABELS.has(state) ? state : "offline";
  badge.dataset.state = name;
  badge.textContent = name;
  badge.title = STATE_HINTS[name];
}

/** A passing message (errors of an action). */
export function toast(message) {
  const node = byId("toast");
  node.textContent = message;
  show(node);
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => show(node, false), TOAST_MS);
}

/** A message that stays (the page cannot do something until an operator acts). */
export function banner(message) {
  const node = byId("banner");
  node.textContent = message;
  show(node, Boolean(message));
}

export function showLogin(message) {
  show(byId("app-view"), false);
  show(byId("me"), false);
  show(byId("login-view"));
  const note = byId("login-message");
  note.textContent = message ?? "";
  show(note, Boolean(message));
  byId("login-form").elements.email.focus();
}

export function showApp() {
  show(byId("login-view"), false);
  show(byId("app-view"));
}

export function renderMe(user) {
  byId("me-name").textContent = user ? `${user.name} · #${user.id}` : "";
  byId("me-name").title = user ? `${user.email} (your user ID is ${user.id})` : "";
  show(byId("me"), Boolean(user));
}

export function renderTeams(store, onSelect) {
  const list = byId("team-list");
  const teams = [...store.teams.values()].sort((a, b) => a.name.localeCompare(b.name));
  list.replaceChildren(
    ...teams.map((team) =>
      el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: "team",
            "aria-current": team.id === store.teamId ? "page" : null,
            dataset: { teamId: team.id },
            onclick: () => onSelect(team.id),
          },
          el("span", { class: "team-title" }, team.name),
          team.role ? el("span", { class: "role" }, team.role) : null,
        ),
      ),
    ),
  );
  show(byId("no-teams"), teams.length === 0);
}

export function renderHeader(store) {
  const team = store.team;
  show(byId("board-header"), Boolean(team));
  show(byId("member-form"), Boolean(team) && store.canManage);
  if (!team) return;
  byId("team-name").textContent = team.name;
  byId("team-description").textContent = team.description ?? "";
}

export function renderMembers(store) {
  const members = store.memberList();
  byId("members").replaceChildren(
    ...members.map(({ userId, user, role }) => {
      const online = store.online.has(userId);
      const name = user?.name ?? `User #${userId}`;
      return el(
        "span",
        {
          class: `avatar${online ? " online" : ""}`,
          title: `${name} (${role}${online ? ", online" : ""})`,
          dataset: { userId, hue: String(userId % 8) },
        },
        initials(name),
      );
    }),
  );
}

/** The three columns. `actions`: {open(task), move(task, status)}. */
export function renderBoard(store, actions) {
  const board = byId("board");
  const empty = byId("board-empty");
  if (!store.team) {
    show(board, false);
    empty.textContent = store.teams.size ? "Pick a team to see its board." : "";
    show(empty, store.teams.size > 0);
    return;
  }
  show(empty, !store.boardLoaded);
  empty.textContent = "Loading the board…";
  show(board, store.boardLoaded);
  for (const [status] of STATUSES) {
    const column = board.querySelector(`.column[data-status="${status}"]`);
    const tasks = store.column(status);
    column.querySelector(".count").textContent = String(tasks.length);
    column.querySelector(".cards").replaceChildren(...tasks.map((t) => card(t, store, actions)));
    if (!column.dataset.wired) wireDrop(column, status, store, actions);
  }
  store.flashes.clear();
}

function card(task, store, actions) {
  const assignee = store.memberName(task.assigneeId);
  const node = el(
    "li",
    {
      class: `card priority-${task.priority}${store.flashes.has(task.id) ? " flash" : ""}`,
      draggable: "true",
      tabindex: "0",
      dataset: { taskId: task.id, status: task.status },
      "aria-label": `${task.title}, ${task.priority} priority`,
      onclick: () => actions.open(task),
      onkeydown: (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          actions.open(task);
        }
      },
      ondragstart: (event) => {
        event.dataTransfer.setData("text/plain", String(task.id));
        event.dataTransfer.effectAllowed = "move";
      },
    },
    el("span", { class: "card-title" }, task.title),
    el(
      "span",
      { class: "card-meta" },
      el("span", { class: `pill ${task.priority}` }, task.priority),
      assignee
        ? el("span", { class: "assignee", title: `Assigned to ${assignee}` }, assignee)
        : el("span", { class: "assignee none" }, "unassigned"),
    ),
  );
  return node;
}

function wireDrop(column, status, store, actions) {
  column.dataset.wired = "1";
  column.addEventListener("dragover", (event) => {
    event.preventDefault();
    column.classList.add("drop");
  });
  column.addEventListener("dragleave", () => column.classList.remove("drop"));
  column.addEventListener("drop", (event) => {
    event.preventDefault();
    column.classList.remove("drop");
    const task = store.tasks.get(Number(event.dataTransfer.getData("text/plain")));
    if (task && task.status !== status) actions.move(task, status);
  });
}

function initials(name) {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? parts[0][0] + parts.at(-1)[0] : (parts[0] ?? "?").slice(0, 2);
  return letters.toUpperCase();
}
