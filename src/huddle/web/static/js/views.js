// Drawing the page from the store. Every piece of data is set as text (see dom.js).

import { clock, duration, dueLabel, dueState } from "./dates.js";
import { byId, el, show } from "./dom.js";
import { STATUSES } from "./store.js";

const STATE_LABELS = new Set(["connecting", "connected", "refreshing token", "degraded", "offline"]);
const STATE_HINTS = {
  connecting: "Connecting for live updates…",
  connected: "Live updates are on.",
  "refreshing token": "Renewing your session; live updates continue in a moment.",
  degraded: "Connected, but the server could not load fresh data; it will catch up.",
  offline: "Not connected: editing is paused and others' changes appear when the connection returns.",
};
const EMPTY_COLUMN = {
  todo: "Nothing to do yet. Add a task with New task.",
  in_progress: "Drag a card here when work on it starts.",
  done: "Finished tasks land here.",
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

/**
 * The offline banner from the live connection's `{lostAt, retryAt, connecting}`
 * (null or no `lostAt`: hidden). Called every second while it shows.
 */
export function renderOffline(info, now = Date.now()) {
  const banner = byId("offline-banner");
  if (!info || info.lostAt === null) {
    show(banner, false);
    document.body.classList.remove("is-offline");
    return;
  }
  document.body.classList.add("is-offline");
  if (banner.hidden) {
    // The title is the live region (announced once); the ticking text is not.
    byId("offline-title").textContent = "";
    show(banner);
    byId("offline-title").textContent = "You are offline.";
  }
  byId("offline-since").textContent = info.everUp
    ? `The connection to the server was lost ${duration(now - info.lostAt)} ago ` +
      `(at ${clock(info.lostAt)}).`
    : `The server could not be reached for ${duration(now - info.lostAt)} ` +
      `(since ${clock(info.lostAt)}).`;
  let retry;
  if (info.connecting) retry = "Reconnecting now…";
  else if (info.retryAt !== null) {
    retry = `Next retry in ${duration(info.retryAt - now)} (at ${clock(info.retryAt)}).`;
  } else retry = "";
  byId("offline-retry").textContent = retry;
  byId("retry-now").disabled = Boolean(info.connecting);
}

/** Turn the page's editing controls on or off (off while the connection is lost). */
export function setEditable(editable) {
  for (const node of document.querySelectorAll("[data-edits]")) {
    if (node instanceof HTMLFormElement) {
      for (const control of node.elements) control.disabled = !editable;
    } else node.disabled = !editable;
  }
  for (const node of document.querySelectorAll(".member-list select, .member-list button")) {
    node.disabled = !editable;
  }
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
  show(byId("connection"), false); // no one is signed in: no connection state to report
  renderOffline(null);
  show(byId("login-view"));
  const note = byId("login-message");
  note.textContent = message ?? "";
  show(note, Boolean(message));
  byId("login-form").elements.email.focus();
}

export function showApp() {
  show(byId("login-view"), false);
  show(byId("app-view"));
  show(byId("connection"));
}

export function renderMe(user) {
  byId("me-name").textContent = user ? user.name : "";
  byId("me-name").title = user ? user.email : "";
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
  show(byId("no-teams"), store.teamsLoaded && teams.length === 0);
}

/** The board's header, the welcome for someone in no team, the filter bar's choices. */
export function renderHeader(store) {
  const team = store.team;
  const noTeams = store.teamsLoaded && store.teams.size === 0;
  show(byId("welcome"), noTeams);
  if (noTeams && store.user) {
    byId("welcome-title").textContent = `Welcome to Huddle, ${store.user.name}`;
    byId("welcome-email").textContent = store.user.email;
  }
  show(byId("board-header"), Boolean(team));
  if (!team) show(byId("filter-bar"), false); // shown by renderBoard once there are tasks
  show(byId("team-panel"), Boolean(team));
  if (!team) return;
  byId("team-name").textContent = team.name;
  byId("team-description").textContent = team.description ?? "";
  show(byId("team-description"), Boolean(team.description));
  renderSettings(store);
}

function renderSettings(store) {
  const team = store.team;
  show(byId("team-settings"), store.canManage);
  show(byId("delete-team"), store.isOwner);
  const form = byId("rename-form");
  // Not while someone is typing in it: a live rename would overwrite their text.
  if (!form.contains(document.activeElement)) {
    form.elements.name.value = team.name;
    form.elements.description.value = team.description ?? "";
  }
}

/** The members panel. `actions`: {setRole(member, role), remove(member)}. */
export function renderMembers(store, actions, { offline = false } = {}) {
  const members = store.memberList();
  const me = store.user?.id;
  const list = byId("members");
  list.classList.toggle("stale", offline);
  list.title = offline ? "Presence is unknown while you are offline." : "";
  byId("member-count").textContent = String(members.length);
  list.replaceChildren(
    ...members.map((member) => {
      const { userId, user, role } = member;
      const online = !offline && store.online.has(userId);
      const name = user?.name ?? `User #${userId}`;
      const you = userId === me;
      const roles = store.rolesFor(member);
      const roleControl = roles.length
        ? el(
            "select",
            {
              class: "member-role",
              "aria-label": `Role of ${name}`,
              disabled: offline,
              onchange: (event) => actions.setRole(member, event.target.value),
            },
            ...roles.map((r) => el("option", { value: r, selected: r === role }, r)),
          )
        : el("span", { class: "role-tag" }, role);
      if (roles.length) roleControl.value = role;
      let action = null;
      if (you) {
        action = el(
          "button",
          {
            type: "button",
            class: "link member-leave",
            disabled: offline,
            onclick: () => actions.remove(member),
          },
          "Leave",
        );
      } else if (store.canRemove(member)) {
        action = el(
          "button",
          {
            type: "button",
            class: "link danger member-remove",
            "aria-label": `Remove ${name}`,
            disabled: offline,
            onclick: () => actions.remove(member),
          },
          "Remove",
        );
      }
      const presence = offline ? "unknown" : online ? "online" : "offline";
      return el(
        "li",
        { class: "member", dataset: { userId, presence, role } },
        avatar(userId, name, online),
        el(
          "div",
          { class: "member-who" },
          el("span", { class: "member-name" }, name, you ? el("span", { class: "you" }, " (you)") : null),
          el("span", { class: "member-email" }, user?.email ?? ""),
          el("span", { class: `member-presence ${presence}` }, presence),
        ),
        el("div", { class: "member-actions" }, roleControl, action),
      );
    }),
  );
  const alone = members.length === 1 && members[0].userId === me;
  const hint = byId("members-alone");
  hint.textContent = store.canManage
    ? "Just you so far. Add a teammate below by the email address they registered with."
    : "";
  show(hint, alone && store.canManage);
  const form = byId("member-form");
  show(form, store.canManage);
  // Only owners hand out ownership.
  form.elements.role.querySelector('option[value="owner"]').hidden = !store.isOwner;
}

function avatar(userId, name, online) {
  return el(
    "span",
    {
      class: `avatar${online ? " online" : ""}`,
      title: `${name}${online ? " (online)" : ""}`,
      dataset: { hue: String(userId % 8) },
      "aria-hidden": "true",
    },
    initials(name),
  );
}

/** The filter bar's assignee choices, keeping the current choice. */
export function renderFilters(store) {
  const select = byId("filter-assignee");
  const options = [
    el("option", { value: "all" }, "Everyone"),
    el("option", { value: "me" }, "Assigned to me"),
    el("option", { value: "none" }, "Unassigned"),
    ...store
      .memberList()
      .filter(({ userId }) => userId !== store.user?.id)
      .map(({ userId, user }) => el("option", { value: String(userId) }, user?.name ?? `User #${userId}`)),
  ];
  select.replaceChildren(...options);
  select.value = store.filter.assignee;
  if (select.value !== store.filter.assignee) {
    store.filter.assignee = "all";
    select.value = "all";
  }
  byId("filter-status").value = store.filter.status;
}

/** The three columns. `actions`: {open(task), move(task, status)}; `editable`: drag allowed. */
export function renderBoard(store, actions, { editable = true } = {}) {
  const board = byId("board");
  const empty = byId("board-empty");
  const hint = byId("board-hint");
  if (!store.team) {
    show(board, false);
    show(hint, false);
    show(byId("filter-bar"), false);
    empty.textContent = "Pick a team to see its board.";
    show(empty, store.teams.size > 0);
    return;
  }
  show(empty, !store.boardLoaded);
  empty.textContent = "Loading the board…";
  show(board, store.boardLoaded);
  const total = store.tasks.size;
  const visible = store.countVisible();
  if (store.boardLoaded && total === 0) {
    hint.textContent =
      "This board has no tasks yet. Create the first one with New task" +
      (store.canManage ? ", and add teammates by email in the Members panel." : ".");
  }
  show(hint, store.boardLoaded && total === 0);
  // Nothing to filter on an empty board: the hint speaks instead.
  show(byId("filter-bar"), store.boardLoaded && (total > 0 || store.filtering));
  byId("filter-summary").textContent = store.filtering
    ? `Showing ${visible} of ${total} task${total === 1 ? "" : "s"}.`
    : `${total} task${total === 1 ? "" : "s"}`;
  show(byId("filter-clear"), store.filtering);
  const now = new Date();
  for (const [status] of STATUSES) {
    const column = board.querySelector(`.column[data-status="${status}"]`);
    show(column, store.filter.status === "all" || store.filter.status === status);
    const tasks = store.column(status);
    column.querySelector(".count").textContent = String(tasks.length);
    column
      .querySelector(".cards")
      .replaceChildren(...tasks.map((t) => card(t, store, actions, editable, now)));
    const note = column.querySelector(".column-empty");
    note.textContent = store.filtering ? "No tasks here match the filter." : EMPTY_COLUMN[status];
    show(note, tasks.length === 0);
    if (!column.dataset.wired) wireDrop(column, status, store, actions);
  }
  store.flashes.clear();
}

function card(task, store, actions, editable, now) {
  const assignee = store.memberName(task.assigneeId);
  const due = dueState(task, now);
  const dueText = dueLabel(task.dueDate, now);
  const classes = ["card", `priority-${task.priority}`];
  if (store.flashes.has(task.id)) classes.push("flash");
  if (due === "overdue") classes.push("overdue");
  const label = [task.title, `${task.priority} priority`];
  if (dueText) label.push(due === "overdue" ? `overdue since ${dueText}` : `due ${dueText}`);
  const node = el(
    "li",
    {
      class: classes.join(" "),
      draggable: editable ? "true" : "false",
      tabindex: "0",
      dataset: due ? { taskId: task.id, status: task.status, due } : { taskId: task.id, status: task.status },
      "aria-label": label.join(", "),
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
    task.description ? el("span", { class: "card-desc" }, task.description) : null,
    el(
      "span",
      { class: "card-meta" },
      el("span", { class: `pill ${task.priority}` }, task.priority),
      dueText
        ? el(
            "span",
            { class: `due${due ? ` ${due}` : ""}`, title: `Due ${dueText}` },
            due === "overdue" ? `Overdue · ${dueText}` : due === "today" ? "Due today" : `Due ${dueText}`,
          )
        : null,
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

/** Ask before something that cannot be undone; resolves to true when confirmed. */
export function confirmAction({ title, text, confirm }) {
  const dialog = byId("confirm-dialog");
  if (dialog.open) return Promise.resolve(false); // one question at a time
  byId("confirm-title").textContent = title;
  byId("confirm-text").textContent = text;
  byId("confirm-ok").textContent = confirm;
  return new Promise((resolve) => {
    const done = (answer) => {
      byId("confirm-ok").onclick = null;
      byId("confirm-cancel").onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    byId("confirm-ok").onclick = (event) => {
      event.preventDefault();
      done(true);
    };
    byId("confirm-cancel").onclick = (event) => {
      event.preventDefault();
      done(false);
    };
    dialog.onclose = () => done(false); // Escape
    dialog.showModal();
    byId("confirm-cancel").focus();
  });
}

function initials(name) {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? parts[0][0] + parts.at(-1)[0] : (parts[0] ?? "?").slice(0, 2);
  return letters.toUpperCase();
}
