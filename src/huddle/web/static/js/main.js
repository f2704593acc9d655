// The web client of `huddle serve`: log in, pick a team, work on its task
// board and its members, and watch the other members' changes arrive live.

import { Api, ApiError } from "./api.js";
import { byId, show } from "./dom.js";
import { TaskEditor } from "./editor.js";
import { Live } from "./live.js";
import { Session } from "./session.js";
import { NO_FILTER, Store } from "./store.js";
import * as views from "./views.js";

const session = new Session();
const api = new Api(session);
const store = new Store();
let live = null;
let registering = false;
let offline = false; // the live connection was lost: editing is paused
let offlineTicker = null;

const editor = new TaskEditor(store, {
  async create(fields) {
    const task = await api.createTask(store.teamId, fields);
    if (store.upsert(task)) drawBoard();
    return task;
  },
  async update(task, fields) {
    try {
      const saved = await api.updateTask(task.id, fields, task.version);
      if (store.upsert(saved)) drawBoard();
      return saved;
    } catch (error) {
      if (error instanceof ApiError && error.code === "VERSION_CONFLICT") {
        if (store.upsert(error.details?.current)) drawBoard();
      }
      throw error;
    }
  },
  async remove(task) {
    await api.deleteTask(task.id);
    if (store.removeTask(task.id)) drawBoard();
  },
});

const boardActions = {
  open: (task) => editor.openEdit(task),
  async move(task, status) {
    if (offline) return;
    try {
      const saved = await api.updateTask(task.id, { status }, task.version);
      if (store.upsert(saved)) drawBoard();
    } catch (error) {
      const current = error?.details?.current;
      if (error instanceof ApiError && error.code === "VERSION_CONFLICT" && current) {
        store.upsert(current);
        drawBoard();
        editor.openConflict(task, { ...task, status }, current);
      } else fail(error);
    }
  },
};

const memberActions = {
  async setRole(member, role) {
    if (role === member.role) return;
    const teamId = store.teamId;
    try {
      const saved = await api.setMemberRole(teamId, member.userId, role);
      if (store.teamId !== teamId) return;
      store.putMember(saved);
      if (saved.userId === store.user?.id) store.putTeam({ ...store.team, role: saved.role });
      views.toast(`${saved.user.name} is now ${article(saved.role)} ${saved.role}.`);
    } catch (error) {
      fail(error);
    }
    drawMembers(); // on failure: the select goes back to the role the member has
    if (member.userId === store.user?.id) drawAll();
  },
  async remove(member) {
    const team = store.team;
    const you = member.userId === store.user?.id;
    const name = member.user?.name ?? `User #${member.userId}`;
    const ok = await views.confirmAction(
      you
        ? {
            title: `Leave ${team.name}?`,
            text: "Its board disappears from your list; an owner or admin can add you again.",
            confirm: "Leave team",
          }
        : {
            title: `Remove ${name} from ${team.name}?`,
            text: "They lose access to the team's board at once. You can add them again later.",
            confirm: "Remove",
          },
    );
    if (!ok || offline) return;
    try {
      await api.removeMember(team.id, member.userId);
    } catch (error) {
      fail(error);
      return;
    }
    if (you) {
      store.teams.delete(team.id);
      drawTeams();
      views.toast(`You left ${team.name}.`);
      await openTeam(pickTeam(null)).catch(fail);
    } else if (store.teamId === team.id) {
      store.members.delete(member.userId);
      store.online.delete(member.userId);
      drawMembers();
      drawBoard();
      views.toast(`${name} was removed from ${team.name}.`);
    }
  },
};

// --- session -------------------------------------------------------------------

session.onEnded = (message) => {
  live?.stop();
  live = null;
  setOffline(false);
  editor.close();
  store.reset();
  views.renderMe(null);
  views.showLogin(message);
};

async function enterApp() {
  views.showApp();
  try {
    store.user = await api.me();
    views.renderMe(store.user);
    startLive();
    await loadTeams();
    await openTeam(pickTeam(session.teamId));
  } catch (error) {
    if (session.signedIn) fail(error);
  }
}

function startLive() {
  if (live) return;
  if (typeof window.io !== "function") {
    views.showConnection("offline"); // the banner says why; editing works over REST
    return;
  }
  live = new Live(window.io, session, {
    state: views.showConnection,
    connection: onConnection,
    authenticated(data) {
      if (data?.user) store.user = data.user;
      views.renderMe(store.user);
      // A degraded answer may carry no teams at all: keep what REST gave us.
      if (!data?.degraded && Array.isArray(data?.teams)) adoptTeams(data.teams);
      refreshPresence();
    },
    dataRefreshed(data) {
      if (Array.isArray(data?.teams)) adoptTeams(data.teams);
    },
    event: onEvent,
    resync: () => reloadAll().catch(fail),
    notice: views.toast,
  });
  live.start();
}

/** The live connection's state changed: the banner, and editing paused or resumed. */
function onConnection(info) {
  views.renderOffline(info);
  setOffline(info.lostAt !== null);
}

function setOffline(value) {
  if (value && offlineTicker === null) {
    offlineTicker = setInterval(() => views.renderOffline(live?.connection ?? null), 1000);
  } else if (!value && offlineTicker !== null) {
    clearInterval(offlineTicker);
    offlineTicker = null;
  }
  if (value === offline) return;
  offline = value;
  if (!value) views.renderOffline(null);
  views.setEditable(!value);
  editor.setOffline(value);
  drawMembers();
  drawBoard();
}

// --- teams and the board ---------------------------------------------------------

async function loadTeams() {
  store.setTeams(await api.userTeams(store.user.id));
  drawTeams();
  views.renderHeader(store);
}

function adoptTeams(teams) {
  store.setTeams(teams);
  drawTeams();
  if (store.teamId !== null && !store.teams.has(store.teamId)) {
    openTeam(pickTeam(null)).catch(fail);
  } else if (store.teamId === null && store.teams.size) {
    openTeam(pickTeam(session.teamId)).catch(fail);
  } else {
    views.renderHeader(store);
  }
}

function pickTeam(preferred) {
  if (preferred !== null && store.teams.has(preferred)) return preferred;
  const [first] = [...store.teams.values()].sort((a, b) => a.name.localeCompare(b.name));
  return first?.id ?? null;
}

async function openTeam(teamId) {
  editor.close();
  store.openTeam(teamId); // live events for it apply from here on
  session.rememberTeam(teamId);
  drawAll();
  if (teamId === null) return;
  const [tasks, members] = await Promise.all([api.tasks(teamId), api.members(teamId)]);
  if (store.teamId !== teamId) return; // another team was picked meanwhile
  store.loadBoard(tasks, members);
  drawAll();
  refreshPresence();
}

async function reloadAll() {
  await loadTeams();
  await openTeam(pickTeam(store.teamId));
}

async function refreshPresence() {
  const teamId = store.teamId;
  if (!live || teamId === null) return;
  const online = await live.presence(teamId);
  if (online && store.teamId === teamId) {
    store.setOnline(online);
    drawMembers();
  }
}

async function createTeam(form) {
  const name = form.elements.name.value.trim();
  if (!name || offline) return;
  try {
    const team = await api.createTeam(name);
    form.reset();
    store.putTeam(team);
    await openTeam(team.id);
  } catch (error) {
    fail(error);
  }
}

function onEvent(type, event) {
  const me = store.user?.id;
  const byMe = event.actorId === me;
  const teamName = store.teams.get(event.teamId)?.name;
  const actor = store.teamId === event.teamId ? store.memberName(event.actorId) : null;
  if (!byMe && teamName) {
    if (type === "team_deleted") {
      views.toast(`${actor ?? "An owner"} deleted the team ${teamName}.`);
    } else if (type === "member_removed" && event.userId === me) {
      views.toast(`${actor ?? "An owner or admin"} removed you from ${teamName}.`);
    } else if (type === "member_updated" && event.userId === me) {
      views.toast(`Your role in ${teamName} is now ${event.role}.`);
    }
  }
  const changed = store.apply(type, event);
  if (type === "task_updated" && event.task && !byMe) {
    editor.changedElsewhere(event.task, actor ?? "Someone");
  }
  if (type === "task_deleted") editor.deletedElsewhere(event.taskId);
  if (changed.fetchTeam) {
    api
      .team(changed.fetchTeam)
      .then((team) => {
        store.putTeam(team);
        drawTeams();
        if (!byMe) views.toast(`You were added to ${team.name}.`);
        if (store.teamId === null) openTeam(team.id).catch(fail);
      })
      .catch(fail);
  }
  if (changed.lostTeam) {
    openTeam(pickTeam(null)).catch(fail);
    return;
  }
  if (changed.teams) {
    drawTeams();
    views.renderHeader(store);
  }
  if (changed.members || changed.myRole) drawMembers();
  if (changed.board || changed.myRole) drawBoard();
}

function drawTeams() {
  views.renderTeams(store, (teamId) => {
    if (teamId !== store.teamId) openTeam(teamId).catch(fail);
  });
}

function drawBoard() {
  views.renderBoard(store, boardActions, { editable: !offline });
}

function drawMembers() {
  views.renderMembers(store, memberActions, { offline });
  views.renderFilters(store);
}

function drawAll() {
  drawTeams();
  views.renderHeader(store);
  drawMembers();
  drawBoard();
  views.setEditable(!offline);
}

function fail(error) {
  if (!session.signedIn) return; // the session ended; the login form says why
  views.toast(error?.message ?? String(error));
}

function article(word) {
  return /^[aeiou]/i.test(word) ? "an" : "a";
}

// --- forms -----------------------------------------------------------------------

function wireForms() {
  const form = byId("login-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const email = form.elements.email.value.trim();
    const password = form.elements.password.value;
    const name = form.elements.name.value.trim();
    const error = byId("login-error");
    error.textContent = "";
    if (!email || !password || (registering && !name)) {
      error.textContent = registering ? "Fill in every field." : "Enter your email and password.";
      return;
    }
    const submit = byId("login-submit");
    submit.disabled = true;
    try {
      if (registering) await api.register(email, password, name);
      session.start(await api.login(email, password));
      form.elements.password.value = "";
      setRegistering(false);
      await enterApp();
    } catch (failure) {
      error.textContent = loginMessage(failure);
    } finally {
      submit.disabled = false;
    }
  });
  byId("switch-mode").addEventListener("click", () => setRegistering(!registering));

  byId("logout").addEventListener("click", async () => {
    const refreshToken = session.refreshToken;
    live?.stop();
    if (refreshToken) await api.logout(refreshToken).catch(() => {});
    session.end("You have logged out.");
  });

  for (const id of ["team-form", "welcome-team-form"]) {
    const teamForm = byId(id);
    teamForm.addEventListener("submit", (event) => {
      event.preventDefault();
      createTeam(teamForm);
    });
  }

  wireMemberForm();
  wireSettings();
  wireFilters();

  byId("new-task").addEventListener("click", () => {
    if (!offline) editor.openNew();
  });
  byId("retry-now").addEventListener("click", () => live?.retryNow());
}

function wireMemberForm() {
  const memberForm = byId("member-form");
  const error = byId("member-error");
  memberForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const email = memberForm.elements.email.value.trim();
    const role = memberForm.elements.role.value;
    error.textContent = "";
    if (!email || !email.includes("@")) {
      error.textContent = "Enter the email address your teammate registered with.";
      return;
    }
    if (offline) return;
    const teamId = store.teamId;
    try {
      const member = await api.addMember(teamId, email, role);
      memberForm.reset();
      if (store.teamId === teamId) {
        store.putMember(member);
        drawMembers();
        drawBoard();
      }
      views.toast(`${member.user.name} joined the team.`);
    } catch (failure) {
      error.textContent = memberMessage(failure, email);
    }
  });
}

function memberMessage(error, email) {
  if (!(error instanceof ApiError)) return "Something went wrong. Try again.";
  switch (error.code) {
    case "USER_NOT_FOUND":
      return (
        `No Huddle account uses ${email}. Ask your teammate to sign up with that ` +
        "address first, then add them here."
      );
    case "CONFLICT":
      return `${email} is already a member of this team.`;
    case "VALIDATION_ERROR":
      return "Enter the email address your teammate registered with.";
    default:
      return error.message;
  }
}

function wireSettings() {
  const form = byId("rename-form");
  const error = byId("rename-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const team = store.team;
    if (!team || offline) return;
    const name = form.elements.name.value.trim();
    const description = form.elements.description.value;
    error.textContent = "";
    if (!name) {
      error.textContent = "A team needs a name.";
      return;
    }
    const fields = {};
    if (name !== team.name) fields.name = name;
    if (description !== (team.description ?? "")) fields.description = description;
    if (!Object.keys(fields).length) return;
    try {
      const saved = await api.updateTeam(team.id, fields);
      form.elements.name.blur();
      form.elements.description.blur();
      store.putTeam(saved);
      drawTeams();
      views.renderHeader(store);
      views.toast("Team settings saved.");
    } catch (failure) {
      error.textContent = failure?.message ?? "Saving failed.";
    }
  });

  byId("delete-team").addEventListener("click", async () => {
    const team = store.team;
    if (!team || offline) return;
    const count = store.tasks.size;
    const ok = await views.confirmAction({
      title: `Delete ${team.name}?`,
      text:
        `Its ${count} task${count === 1 ? "" : "s"} and its member list are deleted for ` +
        "everyone. This cannot be undone.",
      confirm: "Delete team",
    });
    if (!ok || offline) return;
    try {
      await api.deleteTeam(team.id);
    } catch (failure) {
      fail(failure);
      return;
    }
    store.teams.delete(team.id);
    drawTeams();
    views.toast(`${team.name} was deleted.`);
    await openTeam(pickTeam(null)).catch(fail);
  });
}

function wireFilters() {
  const bar = byId("filter-bar");
  bar.addEventListener("submit", (event) => event.preventDefault());
  bar.addEventListener("change", () => {
    store.filter = { assignee: bar.elements.assignee.value, status: bar.elements.status.value };
    drawBoard();
  });
  byId("filter-clear").addEventListener("click", () => {
    store.filter = { ...NO_FILTER };
    views.renderFilters(store);
    drawBoard();
  });
}

function setRegistering(on) {
  registering = on;
  show(byId("name-field"), on);
  byId("login-title").textContent = on ? "Create your Huddle account" : "Sign in to Huddle";
  byId("login-submit").textContent = on ? "Create account" : "Log in";
  byId("switch-text").textContent = on ? "Already have an account?" : "New here?";
  byId("switch-mode").textContent = on ? "Log in" : "Create an account";
  byId("login-form").elements.password.autocomplete = on ? "new-password" : "current-password";
}

function loginMessage(error) {
  if (!(error instanceof ApiError)) return "Something went wrong. Try again.";
  switch (error.code) {
    case "VALIDATION_ERROR":
      return registering
        ? "Check the fields: a valid email, a name, and a password of at least 8 characters."
        : "Check your email and password.";
    case "RATE_LIMITED":
      return "Too many attempts. Wait a few minutes and try again.";
    default:
      return error.message;
  }
}

// --- start -----------------------------------------------------------------------

function boot() {
  wireForms();
  if (typeof window.io !== "function") {
    views.banner(
      "Live updates are unavailable: this server has no socket.io-client bundle " +
        "(/web/vendor/socket.io.min.js). Run `make install` on the server (it needs Node.js " +
        "and npm), then reload. Until then the board works, but other people's changes " +
        "appear only when you reload.",
    );
  }
  if (session.signedIn) enterApp();
  else views.showLogin();
}

boot();
