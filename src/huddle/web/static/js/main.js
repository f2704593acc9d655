// The web client of `huddle serve`: log in, pick a team, work on its task
// board, and watch the other members' changes arrive live.

import { Api, ApiError } from "./api.js";
import { byId, show } from "./dom.js";
import { TaskEditor } from "./editor.js";
import { Live } from "./live.js";
import { Session } from "./session.js";
import { Store } from "./store.js";
import * as views from "./views.js";

const session = new Session();
const api = new Api(session);
const store = new Store();
let live = null;
let registering = false;

const editor = new TaskEditor(store, {
  async create(fields) {
    const task = await api.createTask(store.teamId, fields);
    if (store.upsert(task)) drawBoard();
  },
  async update(task, fields) {
    try {
      const saved = await api.updateTask(task.id, fields, task.version);
      if (store.upsert(saved)) drawBoard();
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
    try {
      const saved = await api.updateTask(task.id, { status }, task.version);
      if (store.upsert(saved)) drawBoard();
    } catch (error) {
      const current = error?.details?.current;
      if (error instanceof ApiError && error.code === "VERSION_CONFLICT" && current) {
        store.upsert(current);
        drawBoard();
        editor.openEdit(current, current);
      } else fail(error);
    }
  },
};

// --- session -------------------------------------------------------------------

session.onEnded = (message) => {
  live?.stop();
  live = null;
  editor.close();
  store.reset();
  views.renderMe(null);
  views.showConnection("offline");
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
  if (live || typeof window.io !== "function") return;
  live = new Live(window.io, session, {
    state: views.showConnection,
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

// --- teams and the board ---------------------------------------------------------

async function loadTeams() {
  store.setTeams(await api.userTeams(store.user.id));
  drawTeams();
}

function adoptTeams(teams) {
  store.setTeams(teams);
  drawTeams();
  if (store.teamId !== null && !store.teams.has(store.teamId)) {
    openTeam(pickTeam(null)).catch(fail);
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
    views.renderMembers(store);
  }
}

function onEvent(type, event) {
  const changed = store.apply(type, event);
  if (type === "task_updated" && event.task) {
    editor.changedElsewhere(event.task, store.memberName(event.actorId) ?? "Someone");
  }
  if (type === "task_deleted") editor.deletedElsewhere(event.taskId);
  if (changed.fetchTeam) {
    api
      .team(changed.fetchTeam)
      .then((team) => {
        store.putTeam(team);
        drawTeams();
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
  if (changed.members) views.renderMembers(store);
  if (changed.board) drawBoard();
}

function drawTeams() {
  views.renderTeams(store, (teamId) => {
    if (teamId !== store.teamId) openTeam(teamId).catch(fail);
  });
}

function drawBoard() {
  views.renderBoard(store, boardActions);
}

function drawAll() {
  drawTeams();
  views.renderHeader(store);
  views.renderMembers(store);
  drawBoard();
}

function fail(error) {
  if (!session.signedIn) return; // the session ended; the login form says why
  views.toast(error?.message ?? String(error));
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

  const teamForm = byId("team-form");
  teamForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = teamForm.elements.name.value.trim();
    if (!name) return;
    try {
      const team = await api.createTeam(name);
      teamForm.reset();
      store.putTeam(team);
      await openTeam(team.id);
    } catch (error) {
      fail(error);
    }
  });

  const memberForm = byId("member-form");
  memberForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const email = memberForm.elements.email.value.trim();
    if (!email) return;
    try {
      const member = await api.addMember(store.teamId, email);
      memberForm.reset();
      store.members.set(member.userId, { user: member.user, role: member.role });
      views.renderMembers(store);
      views.toast(`${member.user.name} joined the team.`);
    } catch (error) {
      fail(error);
    }
  });

  byId("new-task").addEventListener("click", () => editor.openNew());
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
  views.showConnection("offline");
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
