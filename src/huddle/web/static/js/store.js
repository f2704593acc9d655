// What the page knows: the user, their teams, and the open team's tasks,
// members and who of them is online. REST answers and live events are merged
// by `version` (the higher wins) and deleted ids are remembered, so an answer
// that was read before an event but arrives after it never undoes the event.

export const STATUSES = [
  ["todo", "To do"],
  ["in_progress", "In progress"],
  ["done", "Done"],
];
export const PRIORITIES = ["urgent", "high", "medium", "low"];

export class Store {
  constructor() {
    this.reset();
  }

  reset() {
    this.user = null;
    this.teams = new Map();
    this.teamId = null;
    this.boardLoaded = false;
    this.#clearBoard();
  }

  get team() {
    return this.teams.get(this.teamId) ?? null;
  }

  get canManage() {
    const role = this.team?.role;
    return role === "owner" || role === "admin" || Boolean(this.user?.isAdmin);
  }

  setTeams(teams) {
    this.teams = new Map(teams.map((team) => [team.id, team]));
  }

  putTeam(team) {
    const known = this.teams.get(team.id);
    // Event payloads describe the team, not the caller's role in it: keep ours.
    this.teams.set(team.id, { ...known, ...team, role: team.role ?? known?.role ?? null });
  }

  /** Switch the board to `teamId` (null: none). Events for it count from now on. */
  openTeam(teamId) {
    this.teamId = teamId;
    this.boardLoaded = false;
    this.#clearBoard();
  }

  loadBoard(tasks, members) {
    for (const task of tasks) this.upsert(task);
    this.members = new Map(members.map((m) => [m.userId, { user: m.user, role: m.role }]));
    this.boardLoaded = true;
  }

  setOnline(userIds) {
    this.online = new Set(userIds);
  }

  /** Add or replace a task of the open team unless what we hold is newer. */
  upsert(task, { flash = false } = {}) {
    if (!task || task.teamId !== this.teamId || this.deleted.has(task.id)) return false;
    const known = this.tasks.get(task.id);
    if (known && known.version > task.version) return false;
    this.tasks.set(task.id, task);
    if (flash) this.flashes.add(task.id);
    return true;
  }

  removeTask(taskId) {
    this.deleted.add(taskId);
    return this.tasks.delete(taskId);
  }

  /** The open team's tasks with `status`, most urgent first, then oldest first. */
  column(status) {
    return [...this.tasks.values()]
      .filter((task) => task.status === status)
      .sort(
        (a, b) => PRIORITIES.indexOf(a.priority) - PRIORITIES.indexOf(b.priority) || a.id - b.id,
      );
  }

  memberName(userId) {
    if (userId === null || userId === undefined) return null;
    return this.members.get(userId)?.user?.name ?? `User #${userId}`;
  }

  /** Members sorted by name, for the assignee list and the avatars. */
  memberList() {
    return [...this.members.entries()]
      .map(([userId, member]) => ({ userId, ...member }))
      .sort((a, b) => (a.user?.name ?? "").localeCompare(b.user?.name ?? ""));
  }

  /**
   * Apply a live event. Returns what to redraw, and what to fetch:
   * {teams, board, members, fetchTeam (id), lostTeam (the open one was left)}.
   */
  apply(type, event) {
    const changed = {};
    const here = event.teamId === this.teamId;
    const mine = (userId) => userId === this.user?.id;
    const fromOthers = !mine(event.actorId);
    switch (type) {
      case "task_created":
      case "task_updated":
        changed.board = here && this.upsert(event.task, { flash: fromOthers });
        break;
      case "task_deleted":
        changed.board = here && this.removeTask(event.taskId);
        break;
      case "team_updated":
        if (this.teams.has(event.teamId) && event.team) this.putTeam(event.team);
        changed.teams = true;
        break;
      case "team_deleted":
        this.#leave(event.teamId, changed);
        break;
      case "member_added":
        if (mine(event.user?.id)) {
          if (!this.teams.has(event.teamId)) changed.fetchTeam = event.teamId;
        } else if (here && event.user) {
          this.members.set(event.user.id, { user: event.user, role: event.role });
          changed.members = true;
        }
        break;
      case "member_updated":
        if (mine(event.userId) && this.teams.has(event.teamId)) {
          this.putTeam({ ...this.teams.get(event.teamId), role: event.role });
          changed.teams = true;
        }
        if (here && this.members.has(event.userId)) {
          this.members.get(event.userId).role = event.role;
          changed.members = true;
        }
        break;
      case "member_removed":
        if (mine(event.userId)) {
          this.#leave(event.teamId, changed);
        } else if (here) {
          this.members.delete(event.userId);
          this.online.delete(event.userId);
          changed.members = changed.board = true; // assignee names
        }
        break;
      case "presence_changed":
        // One frame per team and window: {teamId, online: [userId…], offline: [userId…]}.
        if (here) {
          for (const userId of event.online ?? []) this.online.add(userId);
          for (const userId of event.offline ?? []) this.online.delete(userId);
          changed.members = true;
        }
        break;
      default:
        break;
    }
    return changed;
  }

  #leave(teamId, changed) {
    this.teams.delete(teamId);
    changed.teams = true;
    if (teamId === this.teamId) changed.lostTeam = true;
  }

  #clearBoard() {
    this.tasks = new Map();
    this.deleted = new Set();
    this.members = new Map();
    this.online = new Set();
    this.flashes = new Set();
  }
}
