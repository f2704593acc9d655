// The task dialog: create, or edit with optimistic concurrency. An edit sends
// the `version` the dialog was opened with; 409 VERSION_CONFLICT brings the
// current task (error details), which the dialog then shows in place of the
// user's copy, saying so, so no one overwrites a change they have not seen.

import { ApiError } from "./api.js";
import { byId, el, show } from "./dom.js";

const FIELDS = ["title", "description", "status", "priority", "assigneeId"];

export class TaskEditor {
  #dialog = byId("task-dialog");
  #form = byId("task-form");
  #task = null; // the task as the dialog last loaded it (null: a new task)
  #store;
  #actions;

  /** `actions`: {create(fields), update(task, fields), remove(task)}, each a promise. */
  constructor(store, actions) {
    this.#store = store;
    this.#actions = actions;
    this.#form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#save();
    });
    byId("task-cancel").addEventListener("click", () => this.close());
    byId("task-delete").addEventListener("click", () => this.#remove());
    this.#dialog.addEventListener("close", () => {
      this.#task = null;
    });
  }

  get openTaskId() {
    return this.#dialog.open ? (this.#task?.id ?? null) : null;
  }

  openNew() {
    this.#task = null;
    this.#fill({ title: "", description: "", status: "todo", priority: "medium", assigneeId: null });
    byId("task-dialog-title").textContent = "New task";
    byId("task-save").textContent = "Create task";
    show(byId("task-delete"), false);
    this.#open();
  }

  openEdit(task, conflict = null) {
    this.#task = task;
    this.#fill(task);
    byId("task-dialog-title").textContent = "Edit task";
    byId("task-save").textContent = "Save";
    show(byId("task-delete"));
    this.#conflict(conflict);
    this.#open();
  }

  close() {
    if (this.#dialog.open) this.#dialog.close();
  }

  /** A live change to the task being edited: say so (saving would conflict). */
  changedElsewhere(task, actorName) {
    if (this.openTaskId !== task.id || task.version === this.#task.version) return;
    const note = byId("task-outside");
    note.textContent = `${actorName} just changed this task. Saving will show you their version.`;
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
    byId("task-delete").textContent = "Delete";
    delete byId("task-delete").dataset.confirm;
    if (!this.#dialog.open) this.#dialog.showModal();
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
    };
  }

  #conflict(current) {
    const note = byId("task-conflict");
    if (current) {
      note.textContent =
        "Someone else changed this task while you were editing it. This is the current " +
        "version: make your change again and save.";
    }
    show(note, Boolean(current));
  }

  async #save() {
    const values = this.#values();
    const error = byId("task-error");
    if (!values.title) {
      error.textContent = "A task needs a title.";
      return;
    }
    error.textContent = "";
    const button = byId("task-save");
    button.disabled = true;
    try {
      if (this.#task === null) {
        await this.#actions.create(values);
      } else {
        const changed = Object.fromEntries(
          FIELDS.filter((f) => (values[f] ?? null) !== (this.#task[f] ?? null)).map((f) => [
            f,
            values[f],
          ]),
        );
        if (Object.keys(changed).length) await this.#actions.update(this.#task, changed);
      }
      this.close();
    } catch (failure) {
      const current = failure?.details?.current;
      if (failure instanceof ApiError && failure.code === "VERSION_CONFLICT" && current) {
        this.openEdit(current, current);
      } else {
        error.textContent = failure?.message ?? "Saving failed.";
      }
    } finally {
      button.disabled = false;
    }
  }

  async #remove() {
    const button = byId("task-delete");
    if (!button.dataset.confirm) {
      button.dataset.confirm = "1";
      button.textContent = "Really delete?";
      return;
    }
    try {
      await this.#actions.remove(this.#task);
      this.close();
    } catch (failure) {
      byId("task-error").textContent = failure?.message ?? "Deleting failed.";
    }
  }
}
