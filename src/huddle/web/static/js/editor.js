// The task dialog: create, or edit with optimistic concurrency.
//
// An edit sends only the fields the user changed, with the `version` the
// dialog was opened with. A 409 VERSION_CONFLICT carries the current task
// (error details): the dialog then shows, field by field, the user's values
// beside the current ones, naming who changed the task, and offers
//   - "Keep mine": the user's changed fields again, on top of the current
//     version (fields only the other person changed keep their values);
//   - "Take theirs": drop the user's edit, the current task stays.
// Nothing the user typed is thrown away before they choose.
//
// While the connection is lost the dialog stays open with what was typed,
// but saving and deleting wait until it is back (the page's offline choice:
// edits are paused, not queued; docs/architecture.md).

import { ApiError } from "./api.js";
import { dayOf, dueFromDay, dueLabel } from "./dates.js";
import { byId, el, show } from "./dom.js";
import { STATUSES } from "./store.js";

const FIELDS = ["title", "description", "status", "priority", "assigneeId", "dueDate"];
const LABELS = {
  title: "Title",
  description: "Description",
  status: "Status",
  priority: "Priority",
  assigneeId: "Assignee",
  dueDate: "Due date",
};
const STATUS_LABELS = Object.fromEntries(STATUSES);

export class TaskEditor {
  #dialog = byId("task-dialog");
  #form = byId("task-form");
  #task = null; // the task as the dialog last loaded it (null: a new task)
  #conflict = null; // {base, mine, theirs} while the conflict view is shown
  #offline = false;
  #busy = false;
  #store;
  #actions;

  /**
   * `actions`: {create(fields), update(task, fields), remove(task)}, each a
   * promise; `update` resolves to the saved task and rejects with the API's error.
   */
  constructor(store, actions) {
    this.#store = store;
    this.#actions = actions;
    this.#form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#save();
    });
    byId("task-cancel").addEventListener("click", () => this.close());
    byId("task-delete").addEventListener("click", () => this.#remove());
    byId("conflict-mine").addEventListener("click", () => this.#keepMine());
    byId("conflict-theirs").addEventListener("click", () => this.#takeTheirs());
    this.#dialog.addEventListener("close", () => {
      this.#task = null;
      this.#conflict = null;
    });
  }

  get openTaskId() {
    return this.#dialog.open ? (this.#task?.id ?? null) : null;
  }

  openNew() {
    this.#task = null;
    this.#conflict = null;
    this.#fill({
      title: "",
      description: "",
      status: "todo",
      priority: "medium",
      assigneeId: null,
      dueDate: null,
    });
    byId("task-dialog-title").textContent = "New task";
    byId("task-save").textContent = "Create task";
    show(byId("task-delete"), false);
    this.#open();
  }

  openEdit(task) {
    this.#task = task;
    this.#conflict = null;
    this.#fill(task);
    byId("task-dialog-title").textContent = "Edit task";
    byId("task-save").textContent = "Save";
    show(byId("task-delete"));
    this.#open();
  }

  /**
   * Show a conflict: `base` is the version the user edited, `mine` the values
   * they want (all fields), `theirs` the current task from the 409.
   */
  openConflict(base, mine, theirs) {
    if (!this.#dialog.open) this.#dialog.showModal();
    this.#task = theirs;
    this.#conflict = { base, mine, theirs };
    byId("task-dialog-title").textContent = "Edit task";
    byId("task-error").textContent = "";
    show(byId("task-outside"), false);
    this.#drawConflict();
    this.#syncButtons();
    byId("conflict-mine").focus();
  }

  close() {
    if (this.#dialog.open) this.#dialog.close();
  }

  /** The connection was lost (true) or is back (false): saving waits for it. */
  setOffline(offline) {
    this.#offline = offline;
    show(byId("task-offline"), offline);
    this.#syncButtons();
  }

  /** A live change to the task being edited: say so, or follow it in the conflict view. */
  changedElsewhere(task, actorName) {
    if (this.openTaskId !== task.id) return;
    if (this.#conflict) {
      if (task.version >= this.#conflict.theirs.version) {
        this.#conflict.theirs = task;
        this.#task = task;
        this.#drawConflict();
      }
      return;
    }
    if (task.version === this.#task.version) return;
    const note = byId("task-outside");
    note.textContent = `${actorName} just changed this task. Saving will show you both versions.`;
    show(note);
  }

  /** The task was deleted elsewhere while open. */
  deletedElsewhere(taskId) {
    if (this.openTaskId !== taskId) return;
    this.close();
  }

  #open() {
    byId("task-error").textContent = "";
    show(byId("task-outside"), false);
    show(byId("conflict-view"), false);
    show(byId("task-fields"));
    byId("task-delete").textContent = "Delete";
    delete byId("task-delete").dataset.confirm;
    if (!this.#dialog.open) this.#dialog.showModal();
    this.#syncButtons();
    this.#form.elements.title.focus();
  }

  #fill(task) {
    const select = this.#form.elements.assigneeId;
    const options = [el("option", { value: "" }, "Unassigned")];
    for (const { userId, user } of this.#store.memberList()) {
      options.push(el("option", { value: userId }, user?.name ?? `User #${userId}`));
    }
    if (task.assigneeId && !this.#store.members.has(task.assigneeId)) {
      options.push(el("option", { value: task.assigneeId }, `User #${task.assigneeId}`));
    }
    select.replaceChildren(...options);
    const elements = this.#form.elements;
    elements.title.value = task.title ?? "";
    elements.description.value = task.description ?? "";
    elements.status.value = task.status ?? "todo";
    elements.priority.value = task.priority ?? "medium";
    elements.dueDate.value = dayOf(task.dueDate);
    select.value = task.assigneeId ? String(task.assigneeId) : "";
  }

  #values() {
    const elements = this.#form.elements;
    const assignee = elements.assigneeId.value;
    return {
      title: elements.title.value.trim(),
      description: elements.description.value,
      status: elements.status.value,
      priority: elements.priority.value,
      assigneeId: assignee ? Number(assignee) : null,
      dueDate: dueFromDay(elements.dueDate.value),
    };
  }

  #syncButtons() {
    const paused = this.#offline || this.#busy;
    byId("task-save").disabled = paused;
    byId("task-delete").disabled = paused;
    byId("conflict-mine").disabled = paused;
  }

  async #save() {
    if (this.#offline || this.#busy || this.#conflict) return;
    const values = this.#values();
    const error = byId("task-error");
    if (!values.title) {
      error.textContent = "A task needs a title.";
      return;
    }
    error.textContent = "";
    const base = this.#task;
    if (base === null) {
      await this.#run(() => this.#actions.create(values), "Saving failed.");
      return;
    }
    const changed = changes(base, values);
    if (!Object.keys(changed).length) {
      this.close();
      return;
    }
    const mine = { ...base, ...values };
    await this.#run(
      () => this.#actions.update(base, changed),
      "Saving failed.",
      (current) => this.openConflict(base, mine, current),
    );
  }

  async #keepMine() {
    const conflict = this.#conflict;
    if (!conflict || this.#offline || this.#busy) return;
    // What the user changed from the version they edited, sent again on top of
    // the current version: their edit wins where both changed a field, and
    // what only the other person changed stays.
    const wanted = changes(conflict.base, conflict.mine);
    const current = conflict.theirs;
    await this.#run(
      () => this.#actions.update(current, wanted),
      "Saving failed.",
      (newer) => this.openConflict(conflict.base, conflict.mine, newer),
    );
  }

  #takeTheirs() {
    this.close(); // the board already shows the current version
  }

  /** Run an action with the buttons held; close on success, show a conflict or the error. */
  async #run(action, fallback, onConflict = null) {
    this.#busy = true;
    this.#syncButtons();
    try {
      await action();
      this.close();
    } catch (failure) {
      const current = failure?.details?.current;
      if (
        onConflict &&
        failure instanceof ApiError &&
        failure.code === "VERSION_CONFLICT" &&
        current
      ) {
        onConflict(current);
      } else {
        byId("task-error").textContent = failure?.message ?? fallback;
      }
    } finally {
      this.#busy = false;
      this.#syncButtons();
    }
  }

  #drawConflict() {
    const { base, mine, theirs } = this.#conflict;
    const who = this.#store.authorOf(theirs);
    const when = theirs.updatedAt ? new Date(theirs.updatedAt) : null;
    const at = when && !Number.isNaN(when.getTime()) ? ` at ${when.toLocaleTimeString()}` : "";
    byId("conflict-message").textContent =
      `${who ?? "Someone else"} changed this task${at} while you were editing it. ` +
      "Here are both versions: keep yours (saved on top of theirs) or take theirs.";
    byId("conflict-theirs-head").textContent = who ? `Theirs (${who})` : "Theirs";
    const rows = [];
    for (const field of FIELDS) {
      const b = same(field, base[field]);
      const m = same(field, mine[field]);
      const t = same(field, theirs[field]);
      if (b === m && b === t) continue;
      const youChanged = m !== b;
      const theyChanged = t !== b;
      let note;
      if (youChanged && theyChanged) note = m === t ? "same change" : "both changed";
      else if (youChanged) note = "you changed";
      else note = `${who ?? "they"} changed · kept`;
      const kind = youChanged && theyChanged && m !== t ? "both" : youChanged ? "mine" : "theirs";
      rows.push(
        el(
          "tr",
          { class: `row-${kind}`, dataset: { field, kind } },
          el("th", { scope: "row" }, LABELS[field], el("span", { class: "diff-note" }, note)),
          el("td", { class: "diff-mine" }, this.#show(field, mine[field])),
          el("td", { class: "diff-theirs" }, this.#show(field, theirs[field])),
        ),
      );
    }
    byId("conflict-rows").replaceChildren(...rows);
    show(byId("task-fields"), false);
    show(byId("conflict-view"));
  }

  /** A field's value as a person reads it. */
  #show(field, value) {
    if (value === null || value === undefined || value === "") {
      return field === "assigneeId" ? "Unassigned" : field === "dueDate" ? "No due date" : "—";
    }
    if (field === "status") return STATUS_LABELS[value] ?? value;
    if (field === "assigneeId") return this.#store.memberName(value);
    if (field === "dueDate") return dueLabel(value);
    return String(value);
  }

  async #remove() {
    if (this.#offline || this.#busy) return;
    const button = byId("task-delete");
    if (!button.dataset.confirm) {
      button.dataset.confirm = "1";
      button.textContent = "Really delete?";
      return;
    }
    await this.#run(() => this.#actions.remove(this.#task), "Deleting failed.");
  }
}

/** A field's value for comparing versions ("" for none; due dates by their day). */
function same(field, value) {
  if (value === null || value === undefined) return "";
  if (field === "dueDate") return dayOf(value);
  return String(value);
}

/** The fields of `values` that differ from `task`. */
function changes(task, values) {
  return Object.fromEntries(
    FIELDS.filter((f) => same(f, values[f]) !== same(f, task[f])).map((f) => [f, values[f]]),
  );
}
