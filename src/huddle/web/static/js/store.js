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
export const ROLES = ["owner", "admin", "member"];
export const NO_FILTER = Object.freeze({ assignee: "all", status: "all" });

export class Store {
  constructor() {
    this.reset();
  }

  reset() {
    this.user = null;
    this.teams = new Map();
    this.teamId = null;
    this.teamsLoaded = false;
    this.boardLoaded = false;
    /** Which cards show: assignee "all" | "me" | "none" | a user id (string); status "all" | a status. */
    this.filter = { ...NO_FILTER };
    this.#clearBoard();
  }

  get team() {
    return this.teams.get(this.teamId) ?? null;
  }

  /** Owners and admins of the open team (and global administrators) manage members and settings. */
  get canManage() {
    const role = this.team?.role;
    return role === "owner" || role === "admin" || Boolean(this.user?.isAdmin);
  }

  /** Owners (and global administrators) delete the team and hand out ownership. */
  get isOwner() {
    return this.team?.role === "owner" || Boolean(this.user?.isAdmin);
  }

  /** The roles the caller may give `member` (an empty list: none, the role is shown as text). */
  rolesFor(member) {
    if (!this.canManage) return [];
    if (this.isOwner) return ROLES;
    return member.role === "owner" ? [] : ["admin", "member"];
  }

  /** Whether the caller may remove `member` (leaving, for oneself, is always offered). */
  canRemove(member) {
    if (member.userId === this.user?.id) return true;
    if (!this.canManage) return false;
    return member.role !== "owner" || this.isOwner;
  }

  setTeams(teams) {
    this.teams = new Map(teams.map((team) => [team.id, team]));
    this.teamsLoaded = true;
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
    // "Me", "unassigned" and a status mean the same in every team; a person may not.
    if (!["all", "me", "none"].includes(this.filter.assignee)) this.filter.assignee = "all";
  }

  loadBoard(tasks, members) {
    for (const task of tasks) this.upsert(task);
    this.members = new Map(members.map((m) => [m.userId, { user: m.user, role: m.role }]));
    this.boardLoaded = true;
  }

  setOnline(userIds) {
    this.online = new Set(userIds);
  }

  putMember(member) {
    this.members.set(member.userId, { user: member.user, role: member.role });
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

  /** Remember who made `task` what it is (a live event's actor), for the conflict view. */
  noteAuthor(task, actorId) {
    if (task && Number.isInteger(actorId)) this.authors.set(task.id, { version: task.version, actorId });
  }

  /** The name of who made this version of `task`, when a live event told us; else null. */
  authorOf(task) {
    const known = task ? this.authors.get(task.id) : null;
    if (!known || known.version !== task.version) return null;
    return this.memberName(known.actorId);
  }

  removeTask(taskId) {
    this.deleted.add(taskId);
    return this.tasks.delete(taskId);
  }

  /** The open team's tasks with `status` that pass the filter, most urgent first, then oldest. */
  column(status) {
    return [...this.tasks.values()]
      .filter((task) => task.status === status && this.passes(task))
      .sort(
        (a, b) => PRIORITIES.indexOf(a.priority) - PRIORITIES.indexOf(b.priority) || a.id - b.id,
      );
  }

  get filtering() {
    return this.filter.assignee !== "all" || this.filter.status !== "all";
  }

  /** Whether the filter bar lets `task` through. */
  passes(task) {
    const { assignee, status } = this.filter;
    if (status !== "all" && task.status !== status) return false;
    if (assignee === "all") return true;
    if (assignee === "me") return task.assigneeId === this.user?.id;
    if (assignee === "none") return task.assigneeId === null || task.assigneeId === undefined;
    return String(task.assigneeId) === assignee;
  }

  /** How many of the open team's tasks pass the filter. */
  countVisible() {
    let count = 0;
    for (const task of this.tasks.values()) if (this.passes(task)) count += 1;
    return count;
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
        if (here) this.noteAuthor(event.task, event.actorId);
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
          this.putMember({ userId: event.user.id, user: event.user, role: event.role });
          changed.members = changed.board = true; // assignee names and choices
        }
        break;
      case "member_updated":
        if (mine(event.userId) && this.teams.has(event.teamId)) {
          this.putTeam({ ...this.teams.get(event.teamId), role: event.role });
          changed.teams = changed.myRole = true;
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
        // SPEC §4.3: {teamId, online: [userId…], offline: [userId…]}, one window's changes.
        if (here) {
          for (const userId of ids(event.online)) this.online.add(userId);
          for (const userId of ids(event.offline)) this.online.delete(userId);
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
    this.authors = new Map();
  }
}

/** The integers of a list from the wire (anything else: none). */
function ids(list) {
  return Array.isArray(list) ? list.filter(Number.isInteger) : [];
}
