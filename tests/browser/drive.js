#!/usr/bin/env node
// Drives the web client of a real `huddle serve` in Debian's chromium, through
// playwright-core (no browser download: the executable is given).
//
//   HUDDLE_BROWSER='{"url": "http://127.0.0.1:8000", "scenario": "board", ...}' node drive.js
//
// The configuration comes in the HUDDLE_BROWSER environment variable (tokens
// among it, so none shows in a process list). The driver acts as user A in
// the page and as user B over REST, records what the page shows, and prints
// one JSON line: {ok: true, result} or {ok: false, error, partial}. The pytest
// module test_web_client.py decides what is right. No token is ever printed:
// where the driver compares tokens it prints whether they changed.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const cfg = JSON.parse(process.env.HUDDLE_BROWSER || '{}');
const WAIT_MS = cfg.waitMs ?? 10_000;
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const SESSION_KEY = 'huddle.session';

const result = { steps: [], console: [], pageErrors: [], websockets: {}, frames: [], screenshots: [] };
const step = (name, extra = {}) => result.steps.push({ name, at: Date.now(), ...extra });
const digest = (value) =>
  value ? crypto.createHash('sha256').update(value).digest('hex').slice(0, 16) : null;

/** An Engine.IO message `42[<ack id>][name, data]` as {name, code}; anything else: null. */
function recordFrame(page, dir, payload) {
  const match = typeof payload === 'string' && /^42\d*(\[.*)$/s.exec(payload);
  if (!match) return;
  try {
    const [name, data] = JSON.parse(match[1]);
    const code = name === 'authentication_error' ? (data?.code ?? null) : undefined;
    result.frames.push({ page, dir, name, ...(code === undefined ? {} : { code }) });
  } catch {
    // not JSON: not an event
  }
}

/** Wait until `predicate()` holds, polling. */
async function until(predicate, what, timeout = WAIT_MS) {
  const deadline = Date.now() + timeout;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** B's side: plain REST calls with B's access token. */
async function asB(method, route, body) {
  const response = await fetch(cfg.url + route, {
    method,
    headers: { Authorization: `Bearer ${cfg.b.token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`B ${method} ${route}: ${response.status} ${text.slice(0, 300)}`);
  return text ? JSON.parse(text) : null;
}

/** The card titled `title` in the column `status`. */
const card = (page, status, title) =>
  page.locator(`.column[data-status="${status}"] .card`, { hasText: title });

async function watchPage(page, label) {
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') {
      result.console.push({ page: label, type: message.type(), text: message.text().slice(0, 500) });
    }
  });
  page.on('pageerror', (error) => result.pageErrors.push({ page: label, text: String(error).slice(0, 500) }));
  // Socket.IO events over the WebSocket, by name only (payloads carry tokens).
  page.on('websocket', (ws) => {
    result.websockets[label] = (result.websockets[label] ?? 0) + 1;
    ws.on('framereceived', ({ payload }) => recordFrame(label, 'in', payload));
    ws.on('framesent', ({ payload }) => recordFrame(label, 'out', payload));
  });
  // Every state the connection badge shows, in order.
  await page.addInitScript(() => {
    window.__badge = [];
    document.addEventListener('DOMContentLoaded', () => {
      const badge = document.getElementById('connection');
      const record = () => window.__badge.push(badge.dataset.state);
      record();
      new MutationObserver(record).observe(badge, { attributes: true, attributeFilter: ['data-state'] });
    });
  });
}

async function login(page, email, password) {
  await page.goto(cfg.url + '/', { waitUntil: 'domcontentloaded' });
  const form = page.locator('#login-form');
  await form.waitFor({ state: 'visible', timeout: WAIT_MS });
  await form.getByLabel('Email').fill(email);
  await form.getByLabel('Password').fill(password);
  // Nobody is signed in yet: the page has no connection state to show.
  result.loginPage ??= {
    badgeVisible: await page.locator('#connection').isVisible(),
    text: await page.locator('body').innerText(),
  };
  await page.locator('#login-submit').click();
}

/** What the conflict view shows: its message, the "theirs" heading, and each row. */
const conflictView = (page) =>
  page.evaluate(() => ({
    message: document.getElementById('conflict-message').textContent,
    theirsHead: document.getElementById('conflict-theirs-head').textContent,
    fieldsHidden: document.getElementById('task-fields').hidden,
    rows: [...document.querySelectorAll('#conflict-rows tr')].map((row) => ({
      field: row.dataset.field,
      kind: row.dataset.kind,
      mine: row.querySelector('.diff-mine').textContent,
      theirs: row.querySelector('.diff-theirs').textContent,
      note: row.querySelector('.diff-note').textContent,
    })),
  }));

/** Register through the login form's "Create an account". */
async function register(page, { email, name, password }) {
  const form = page.locator('#login-form');
  await form.waitFor({ state: 'visible', timeout: WAIT_MS });
  await page.locator('#switch-mode').click();
  await form.getByLabel('Email').fill(email);
  await form.getByLabel('Name').fill(name);
  await form.getByLabel('Password').fill(password);
  await page.locator('#login-submit').click();
}

/** "YYYY-MM-DD", `days` from today in this machine's time zone (the browser's too). */
function day(days) {
  const date = new Date();
  date.setDate(date.getDate() + days);
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

/** Ask the test to act (stop or start the server) and wait until it has. */
let stdinReader = null;
let stdinLines = null;
async function control(name) {
  if (stdinLines === null) {
    const readline = require('node:readline');
    stdinReader = readline.createInterface({ input: process.stdin });
    stdinLines = stdinReader[Symbol.asyncIterator]();
  }
  process.stdout.write(JSON.stringify({ control: name }) + '\n');
  const { value, done } = await stdinLines.next();
  if (done || JSON.parse(value).done !== name) throw new Error(`control ${name}: no answer`);
}

/** REST as a user whose token the test minted (never printed). */
async function rest(token, method, route, body) {
  const response = await fetch(cfg.url + route, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** The member row of `name` in a page's members panel. */
const memberRow = (page, name) => page.locator('#members .member', { hasText: name });

/** Every visible card title on a page's board. */
const visibleTitles = (page) =>
  page.locator('.column:not([hidden]) .card .card-title').allTextContents();

/** Until the page's finite animations (a card's arrival highlight) have ended. */
const settled = (page) =>
  page.waitForFunction(
    () => document.getAnimations().every((a) => a.effect?.getTiming().iterations === Infinity),
    null,
    { timeout: WAIT_MS },
  );

async function shot(page, name) {
  await page.mouse.move(0, 0);
  await settled(page);
  const file = path.join(cfg.artifacts, name);
  await page.screenshot({ path: file, fullPage: true });
  result.screenshots.push(name);
}

const badgeText = (page) => page.locator('#connection').textContent();
const storedSession = (page) =>
  page.evaluate((key) => JSON.parse(sessionStorage.getItem(key) || 'null'), SESSION_KEY);

/** The board scenario: everything a member does, and B's changes arriving live. */
async function board(context) {
  // --- 1. A logs in, sees the team's board, live --------------------------------
  const page = context.pages()[0] ?? (await context.newPage());
  await watchPage(page, 'main');
  await login(page, cfg.a.email, cfg.a.password);
  const teamButton = page.locator('#team-list .team', { hasText: cfg.teamName });
  await teamButton.waitFor({ timeout: WAIT_MS });
  await page.locator('#board').waitFor({ state: 'visible', timeout: WAIT_MS });
  await page.locator('#connection[data-state="connected"]').waitFor({ timeout: WAIT_MS });
  result.teamCurrent = await teamButton.getAttribute('aria-current');
  result.heading = await page.locator('#team-name').textContent();
  result.seededVisible = await card(page, 'todo', cfg.seededTitle).count();
  result.urlAfterLogin = page.url();
  const firstSession = await storedSession(page);
  result.loginStored = {
    access: Boolean(firstSession?.accessToken),
    refresh: Boolean(firstSession?.refreshToken),
  };
  step('logged_in');

  // --- 2. A creates a task through the dialog -----------------------------------
  await page.locator('#new-task').click();
  const dialog = page.locator('#task-dialog');
  await dialog.waitFor({ state: 'visible', timeout: WAIT_MS });
  await dialog.getByLabel('Title').fill(cfg.titles.byA);
  await dialog.getByLabel('Description').fill(cfg.descriptionByA);
  await dialog.getByLabel('Priority').selectOption('high');
  await dialog.getByLabel('Assignee').selectOption(String(cfg.b.id));
  await dialog.getByLabel('Due date').fill(cfg.dueByA);
  await page.locator('#task-save').click();
  await dialog.waitFor({ state: 'hidden', timeout: WAIT_MS });
  await card(page, 'todo', cfg.titles.byA).waitFor({ timeout: WAIT_MS });
  const created = card(page, 'todo', cfg.titles.byA);
  result.createdByA = {
    meta: await created.locator('.card-meta').innerText(),
    description: await created.locator('.card-desc').textContent(),
    due: await created.locator('.due').textContent(),
    overdue: await created.getAttribute('data-due'),
  };
  step('created_in_ui');

  // --- 3. B's changes over REST arrive live --------------------------------------
  const sent = Date.now();
  const byB = await asB('POST', `/api/teams/${cfg.teamId}/tasks`, {
    title: cfg.titles.byB,
    status: 'in_progress',
    priority: 'urgent',
    assigneeId: cfg.a.id,
  });
  await card(page, 'in_progress', cfg.titles.byB).waitFor({ timeout: WAIT_MS });
  result.liveCreateMs = Date.now() - sent;
  result.byBTaskId = byB.id;

  const { items } = await asB('GET', `/api/teams/${cfg.teamId}/tasks?limit=100`);
  const aTask = items.find((task) => task.title === cfg.titles.byA);
  result.createdByAServer = aTask ?? null;
  await asB('PATCH', `/api/tasks/${aTask.id}`, { status: 'done', version: aTask.version });
  await card(page, 'done', cfg.titles.byA).waitFor({ timeout: WAIT_MS });
  result.liveMoveSeen = (await card(page, 'todo', cfg.titles.byA).count()) === 0;
  step('live_changes');

  // --- 4. A conflicting edit: both versions side by side, A takes theirs ----------
  await card(page, 'in_progress', cfg.titles.byB).click();
  await dialog.waitFor({ state: 'visible', timeout: WAIT_MS });
  await dialog.getByLabel('Priority').selectOption('low');
  await asB('PATCH', `/api/tasks/${byB.id}`, { title: cfg.titles.renamedByB, version: byB.version });
  await page.locator('#task-outside').waitFor({ state: 'visible', timeout: WAIT_MS });
  result.outsideNote = await page.locator('#task-outside').textContent();
  await page.locator('#task-save').click();
  await page.locator('#conflict-view').waitFor({ state: 'visible', timeout: WAIT_MS });
  result.conflict = await conflictView(page);
  await page.locator('#conflict-theirs').click();
  await dialog.waitFor({ state: 'hidden', timeout: WAIT_MS });
  result.afterConflict = await asB('GET', `/api/tasks/${byB.id}`);
  result.afterConflictCard = await card(page, 'in_progress', cfg.titles.renamedByB)
    .locator('.pill')
    .textContent();
  step('conflict_took_theirs');

  // --- 5. presence, silent refreshes, the picture -----------------------------------
  await page.locator('#members .member[data-presence="online"]').first().waitFor({ timeout: WAIT_MS });
  result.onlineAvatars = await page.locator('#members .member[data-presence="online"] .avatar.online').count();
  if (cfg.refreshWithinMs) {
    // The server announces expiry soon after each authentication: wait for a
    // silent refresh on the socket and check the page carried on.
    await page.waitForFunction(
      () => window.__badge.includes('refreshing token'),
      null,
      { timeout: cfg.refreshWithinMs },
    );
  }
  await page.locator('#connection[data-state="connected"]').waitFor({ timeout: WAIT_MS });
  const laterSession = await storedSession(page);
  result.rotated = {
    access: digest(laterSession?.accessToken) !== digest(firstSession?.accessToken),
    refresh: digest(laterSession?.refreshToken) !== digest(firstSession?.refreshToken),
  };
  result.lastEventId = laterSession?.lastEventId ?? null;
  result.badgeHistory = await page.evaluate(() => window.__badge);
  result.badgeText = await badgeText(page);
  result.loginVisibleAtEnd = await page.locator('#login-view').isVisible();
  await page.mouse.move(0, 0);
  await settled(page); // let the arrival highlight fade for the picture
  await page.screenshot({ path: cfg.screenshot, fullPage: true });
  step('screenshot');

  // --- 6. data is shown as text, never run ------------------------------------------
  await asB('POST', `/api/teams/${cfg.teamId}/tasks`, { title: cfg.titles.markup });
  await card(page, 'todo', cfg.titles.markup).waitFor({ timeout: WAIT_MS });
  result.markup = {
    text: await card(page, 'todo', cfg.titles.markup).locator('.card-title').textContent(),
    injected: await page.evaluate(() => document.querySelectorAll('.card-title img').length),
    ran: await page.evaluate(() => window.__xss === 1),
  };
  step('markup_as_text');

  // --- 7. a stored session with an expired access token refreshes over REST --------
  const resumed = await context.newPage();
  await watchPage(resumed, 'resumed');
  await resumed.addInitScript(
    ([key, value]) => {
      if (!sessionStorage.getItem(key)) sessionStorage.setItem(key, value);
    },
    [SESSION_KEY, JSON.stringify({ accessToken: cfg.a.expiredToken, refreshToken: cfg.a.spareRefreshToken })],
  );
  await resumed.goto(cfg.url + '/', { waitUntil: 'domcontentloaded' });
  await card(resumed, 'in_progress', cfg.titles.renamedByB).waitFor({ timeout: WAIT_MS });
  await resumed.locator('#connection[data-state="connected"]').waitFor({ timeout: WAIT_MS });
  const resumedSession = await storedSession(resumed);
  result.resumed = {
    accessChanged: digest(resumedSession?.accessToken) !== digest(cfg.a.expiredToken),
    refreshChanged: digest(resumedSession?.refreshToken) !== digest(cfg.a.spareRefreshToken),
    loginVisible: await resumed.locator('#login-view').isVisible(),
    badge: await badgeText(resumed),
  };
  await resumed.close();
  step('resumed_with_expired_token');

  // --- 8. A removes B from the team through the members panel (with confirmation) ----
  await memberRow(page, cfg.b.name).getByRole('button', { name: `Remove ${cfg.b.name}` }).click();
  await page.locator('#confirm-dialog').waitFor({ state: 'visible', timeout: WAIT_MS });
  result.removeConfirm = await page.locator('#confirm-title').textContent();
  await page.locator('#confirm-ok').click();
  await memberRow(page, cfg.b.name).waitFor({ state: 'detached', timeout: WAIT_MS });
  const gone = await fetch(`${cfg.url}/api/teams/${cfg.teamId}`, {
    headers: { Authorization: `Bearer ${cfg.b.token}` },
  });
  result.removedB = { status: gone.status };
  step('removed_b');

  // --- 9. without the socket.io bundle the page says so ----------------------------
  const bare = await context.newPage();
  await bare.route('**/web/vendor/socket.io.min.js', (route) =>
    route.fulfill({ status: 404, contentType: 'application/json', body: '{}' }),
  );
  await bare.goto(cfg.url + '/', { waitUntil: 'domcontentloaded' });
  await bare.locator('#banner').waitFor({ state: 'visible', timeout: WAIT_MS });
  result.noBundle = {
    banner: await bare.locator('#banner').textContent(),
    badgeVisible: await bare.locator('#connection').isVisible(),
    loginVisible: await bare.locator('#login-form').isVisible(),
  };
  await bare.close();
  step('no_bundle');
}

/**
 * The expiry scenario (no `token_expiring`: the server's warning is off): the
 * socket's access token runs out, the gateway says TOKEN_EXPIRED and keeps
 * the socket open, and the page refreshes on that same socket.
 */
async function expiry(context) {
  const page = context.pages()[0] ?? (await context.newPage());
  await watchPage(page, 'main');
  await login(page, cfg.a.email, cfg.a.password);
  await page.locator('#board').waitFor({ state: 'visible', timeout: WAIT_MS });
  await page.locator('#connection[data-state="connected"]').waitFor({ timeout: WAIT_MS });
  const first = await storedSession(page);
  step('logged_in');

  const expired = () =>
    result.frames.findIndex((f) => f.name === 'authentication_error' && f.code === 'TOKEN_EXPIRED');
  await until(() => expired() >= 0, 'TOKEN_EXPIRED', cfg.expireWithinMs);
  await until(
    () => result.frames.slice(expired()).some((f) => f.dir === 'in' && f.name === 'authenticated'),
    'authenticated after the refresh',
  );
  await page.locator('#connection[data-state="connected"]').waitFor({ timeout: WAIT_MS });
  step('refreshed_on_socket');

  // The socket is back in the team's room: B's change arrives live.
  await asB('POST', `/api/teams/${cfg.teamId}/tasks`, { title: cfg.titles.byB });
  await card(page, 'todo', cfg.titles.byB).waitFor({ timeout: WAIT_MS });
  step('live_after_refresh');

  // Past another expiry, A still works through REST without being asked to log in.
  await page.waitForTimeout(cfg.ttlMs);
  await page.locator('#new-task').click();
  await page.locator('#task-dialog').getByLabel('Title').fill(cfg.titles.byA);
  await page.locator('#task-save').click();
  await card(page, 'todo', cfg.titles.byA).waitFor({ timeout: WAIT_MS });
  await page.locator('#connection[data-state="connected"]').waitFor({ timeout: WAIT_MS });
  step('rest_after_expiry');

  const later = await storedSession(page);
  result.rotated = {
    access: digest(later?.accessToken) !== digest(first?.accessToken),
    refresh: digest(later?.refreshToken) !== digest(first?.refreshToken),
  };
  result.loginVisibleAtEnd = await page.locator('#login-view').isVisible();
  result.badgeHistory = await page.evaluate(() => window.__badge);
}


/**
 * The team scenario: two people in two browser contexts. Grace registers in
 * the page and meets the welcome; Ada (registered, in no team yet) starts a
 * team, adds Grace by email, changes her role, renames the team; tasks with
 * due dates and descriptions; Grace's filters; a conflict resolved with
 * "keep mine"; the server stopped and started again (offline banner, paused
 * editing, recovery); Grace leaves and Ada deletes the team.
 */
async function team(browser) {
  const viewport = { width: 1360, height: 820 };
  const adaContext = await browser.newContext({ viewport });
  const graceContext = await browser.newContext({ viewport });
  const grace = await graceContext.newPage();
  const ada = await adaContext.newPage();
  await watchPage(grace, 'grace');
  await watchPage(ada, 'ada');
  step('browser_ready');

  // --- 1. Grace registers and meets the welcome, not a blank page -----------------
  // --- 2. Ada starts a team from the welcome: an empty board that says what next ---
  // (independent: the two people do this at the same time)
  const graceArrives = async () => {
    await grace.goto(cfg.url + '/', { waitUntil: 'domcontentloaded' });
    result.loginPage = {
      badgeVisible: await grace.locator('#connection').isVisible(),
      text: await grace.locator('body').innerText(),
    };
    await register(grace, cfg.grace);
    await grace.locator('#welcome').waitFor({ state: 'visible', timeout: WAIT_MS });
    await grace.locator('#connection[data-state="connected"]').waitFor({ timeout: WAIT_MS });
    result.welcome = {
      title: await grace.locator('#welcome-title').textContent(),
      email: await grace.locator('#welcome-email').textContent(),
      text: await grace.locator('#welcome').innerText(),
      boardVisible: await grace.locator('#board').isVisible(),
    };
    await shot(grace, 'welcome.png');
    step('grace_registered');
  };
  const adaStartsATeam = async () => {
    await login(ada, cfg.ada.email, cfg.ada.password);
    await ada.locator('#welcome').waitFor({ state: 'visible', timeout: WAIT_MS });
    await ada.locator('#welcome-team-form').getByLabel('Team name').fill(cfg.teamName);
    await ada.locator('#welcome-team-form button[type="submit"]').click();
    await ada.locator('#board').waitFor({ state: 'visible', timeout: WAIT_MS });
    await ada.locator('#connection[data-state="connected"]').waitFor({ timeout: WAIT_MS });
    await memberRow(ada, cfg.ada.name).waitFor({ timeout: WAIT_MS });
    result.emptyBoard = {
      heading: await ada.locator('#team-name').textContent(),
      welcomeVisible: await ada.locator('#welcome').isVisible(),
      hint: (await ada.locator('#board-hint').isVisible()) ? await ada.locator('#board-hint').textContent() : null,
      filterBarVisible: await ada.locator('#filter-bar').isVisible(),
      columnHints: await ada.locator('.column-empty:visible').allTextContents(),
      alone: (await ada.locator('#members-alone').isVisible())
        ? await ada.locator('#members-alone').textContent()
        : null,
      adaRole: await memberRow(ada, cfg.ada.name).getAttribute('data-role'),
    };
    await shot(ada, 'empty-board.png');
    step('team_created');
  };
  await Promise.all([graceArrives(), adaStartsATeam()]);
  const teamId = Number(
    await ada.locator('#team-list .team[aria-current="page"]').getAttribute('data-team-id'),
  );

  // --- 3. Adding by email: an unknown address, then Grace's ----------------------
  const memberForm = ada.locator('#member-form');
  await memberForm.getByLabel('Their email address').fill(cfg.unknownEmail);
  await memberForm.locator('button[type="submit"]').click();
  await ada.locator('#member-error:not(:empty)').waitFor({ timeout: WAIT_MS });
  result.unknownEmail = await ada.locator('#member-error').textContent();

  await memberForm.getByLabel('Their email address').fill(cfg.grace.email.toUpperCase());
  const added = Date.now();
  await memberForm.locator('button[type="submit"]').click();
  await memberRow(ada, cfg.grace.name).waitFor({ timeout: WAIT_MS });
  // Grace's page: the team arrives live and opens, the welcome goes away.
  await grace.locator('#team-name', { hasText: cfg.teamName }).waitFor({ timeout: WAIT_MS });
  result.graceSawTeamMs = Date.now() - added;
  await memberRow(ada, cfg.grace.name).and(ada.locator('[data-presence="online"]')).waitFor({ timeout: WAIT_MS });
  await memberRow(grace, cfg.ada.name).and(grace.locator('[data-presence="online"]')).waitFor({ timeout: WAIT_MS });
  result.members = {
    adaSees: await ada.locator('#members .member').evaluateAll((rows) =>
      rows.map((r) => ({
        name: r.querySelector('.member-name').textContent,
        role: r.dataset.role,
        presence: r.dataset.presence,
        email: r.querySelector('.member-email').textContent,
      })),
    ),
    memberErrorAfter: await ada.locator('#member-error').textContent(),
    graceWelcomeVisible: await grace.locator('#welcome').isVisible(),
    graceMemberFormVisible: await grace.locator('#member-form').isVisible(),
    graceRoleSelects: await grace.locator('#members select.member-role').count(),
  };
  step('grace_added');

  // --- 4. Ada makes Grace an admin: Grace's page follows live ---------------------
  await memberRow(ada, cfg.grace.name).getByLabel(`Role of ${cfg.grace.name}`).selectOption('admin');
  await grace.locator('#member-form').waitFor({ state: 'visible', timeout: WAIT_MS });
  await grace.locator('#team-list .team .role', { hasText: 'admin' }).waitFor({ timeout: WAIT_MS });
  result.roleChange = {
    graceRoleInAdaPanel: await memberRow(ada, cfg.grace.name).getAttribute('data-role'),
    graceSidebarRole: await grace.locator('#team-list .team .role').textContent(),
    graceToast: await grace.locator('#toast').textContent(),
    graceSettingsVisible: await grace.locator('#team-settings').isVisible(),
    graceDeleteVisible: await grace.locator('#delete-team').isVisible(),
  };
  await shot(ada, 'members.png');
  step('role_changed');

  // --- 5. Ada renames the team: Grace's heading follows live -----------------------
  const rename = ada.locator('#rename-form');
  await rename.getByLabel('Team name').fill(cfg.renamedTeam);
  await rename.locator('button[type="submit"]').click();
  await grace.locator('#team-name', { hasText: cfg.renamedTeam }).waitFor({ timeout: WAIT_MS });
  result.renamed = {
    grace: await grace.locator('#team-name').textContent(),
    graceSidebar: await grace.locator('#team-list .team-title').allTextContents(),
    ada: await ada.locator('#team-name').textContent(),
  };
  step('renamed');

  // --- 6. Due dates, descriptions, overdue ------------------------------------------
  const newTask = async (fields) => {
    await ada.locator('#new-task').click();
    const dialog = ada.locator('#task-dialog');
    await dialog.waitFor({ state: 'visible', timeout: WAIT_MS });
    await dialog.getByLabel('Title').fill(fields.title);
    if (fields.description) await dialog.getByLabel('Description').fill(fields.description);
    if (fields.status) await dialog.getByLabel('Status').selectOption(fields.status);
    if (fields.priority) await dialog.getByLabel('Priority').selectOption(fields.priority);
    if (fields.assignee) await dialog.getByLabel('Assignee').selectOption({ label: fields.assignee });
    if (fields.due) await dialog.getByLabel('Due date').fill(fields.due);
    await ada.locator('#task-save').click();
    await dialog.waitFor({ state: 'hidden', timeout: WAIT_MS });
  };
  const t = cfg.tasks;
  await newTask({ ...t.overdue, due: day(-1), assignee: cfg.grace.name });
  await newTask({ ...t.upcoming, due: day(2) });
  // Two more over REST (quicker; the dialog's part is shown above).
  const graceId = Number(await memberRow(ada, cfg.grace.name).getAttribute('data-user-id'));
  await rest(cfg.ada.token, 'POST', `/api/teams/${teamId}/tasks`, {
    title: t.doneLate.title,
    status: 'done',
    assigneeId: graceId,
    dueDate: `${day(-3)}T00:00:00.000Z`,
  });
  await rest(cfg.ada.token, 'POST', `/api/teams/${teamId}/tasks`, {
    title: t.started.title,
    status: 'in_progress',
  });
  for (const task of [t.overdue, t.upcoming, t.doneLate, t.started]) {
    await grace.locator('.card', { hasText: task.title }).waitFor({ timeout: WAIT_MS });
  }
  const cardInfo = (page, title) =>
    page.locator('.card', { hasText: title }).evaluate((node) => ({
      status: node.dataset.status,
      due: node.dataset.due ?? null,
      dueText: node.querySelector('.due')?.textContent ?? null,
      description: node.querySelector('.card-desc')?.textContent ?? null,
      assignee: node.querySelector('.assignee')?.textContent ?? null,
      overdueClass: node.classList.contains('overdue'),
    }));
  result.dueDates = {
    overdue: await cardInfo(grace, t.overdue.title),
    upcoming: await cardInfo(grace, t.upcoming.title),
    doneLate: await cardInfo(grace, t.doneLate.title),
    started: await cardInfo(grace, t.started.title),
    boardHintVisible: await ada.locator('#board-hint').isVisible(),
  };
  // The date picked is the date stored (that day, 00:00 UTC) and shown again in the dialog.
  const { body: listed } = await rest(cfg.ada.token, 'GET', `/api/teams/${teamId}/tasks?limit=100`);
  result.dueDates.stored = Object.fromEntries(listed.items.map((task) => [task.title, task.dueDate]));
  result.dueDates.expected = { overdue: day(-1), upcoming: day(2) };
  await ada.locator('.card', { hasText: t.overdue.title }).click();
  result.dueDates.reopened = await ada.locator('#task-dialog').getByLabel('Due date').inputValue();
  await ada.locator('#task-cancel').click();
  await shot(ada, 'board-due-dates.png');
  step('due_dates');

  // --- 7. Grace filters the board ---------------------------------------------------------
  const filters = grace.locator('#filter-bar');
  await filters.getByLabel('Assignee').selectOption('me');
  result.filters = { mine: (await visibleTitles(grace)).sort(), mineSummary: await grace.locator('#filter-summary').textContent() };
  await filters.getByLabel('Status').selectOption('in_progress');
  result.filters.mineInProgress = await visibleTitles(grace);
  result.filters.visibleColumns = await grace.locator('.column:not([hidden])').evaluateAll((cols) => cols.map((c) => c.dataset.status));
  result.filters.emptyNote = await grace.locator('.column:not([hidden]) .column-empty').textContent();
  await filters.getByLabel('Assignee').selectOption('none');
  result.filters.unassignedInProgress = await visibleTitles(grace);
  await shot(grace, 'board-filtered.png');
  await grace.locator('#filter-clear').click();
  result.filters.cleared = (await visibleTitles(grace)).length;
  result.filters.clearVisibleAfter = await grace.locator('#filter-clear').isVisible();
  step('filters');

  // --- 8. A conflict: both versions side by side, Ada keeps hers --------------------
  const adaDialog = ada.locator('#task-dialog');
  const graceDialog = grace.locator('#task-dialog');
  await ada.locator('.card', { hasText: t.upcoming.title }).click();
  await adaDialog.waitFor({ state: 'visible', timeout: WAIT_MS });
  await grace.locator('.card', { hasText: t.upcoming.title }).click();
  await graceDialog.waitFor({ state: 'visible', timeout: WAIT_MS });
  await graceDialog.getByLabel('Title').fill(cfg.conflict.graceTitle);
  await graceDialog.getByLabel('Description').fill(cfg.conflict.graceDescription);
  await grace.locator('#task-save').click();
  await graceDialog.waitFor({ state: 'hidden', timeout: WAIT_MS });
  await ada.locator('#task-outside').waitFor({ state: 'visible', timeout: WAIT_MS });
  result.conflictOutside = await ada.locator('#task-outside').textContent();
  await adaDialog.getByLabel('Title').fill(cfg.conflict.adaTitle);
  await adaDialog.getByLabel('Priority').selectOption('urgent');
  await ada.locator('#task-save').click();
  await ada.locator('#conflict-view').waitFor({ state: 'visible', timeout: WAIT_MS });
  result.conflict = await conflictView(ada);
  await shot(ada, 'conflict.png');
  await ada.locator('#conflict-mine').click();
  await adaDialog.waitFor({ state: 'hidden', timeout: WAIT_MS });
  await grace.locator('.card', { hasText: cfg.conflict.adaTitle }).waitFor({ timeout: WAIT_MS });
  const upcomingId = listed.items.find((task) => task.title === t.upcoming.title).id;
  result.afterKeepMine = (await rest(cfg.ada.token, 'GET', `/api/tasks/${upcomingId}`)).body;
  result.afterKeepMineGraceCard = await cardInfo(grace, cfg.conflict.adaTitle);
  step('conflict_kept_mine');

  // --- 9. The server stops: both pages say so, editing pauses; it comes back ------
  await ada.locator('.card', { hasText: t.overdue.title }).click();
  await adaDialog.waitFor({ state: 'visible', timeout: WAIT_MS });
  await adaDialog.getByLabel('Description').fill(cfg.offlineDescription);
  await control('stop');
  const stoppedAt = Date.now();
  for (const page of [ada, grace]) {
    await page.locator('#offline-banner').waitFor({ state: 'visible', timeout: WAIT_MS });
    await page.locator('#connection[data-state="offline"]').waitFor({ timeout: WAIT_MS });
  }
  result.offlineShownMs = Date.now() - stoppedAt;
  const firstBanner = await grace.locator('#offline-banner').innerText();
  const firstSince = await grace.locator('#offline-since').textContent();
  await grace.locator('#offline-retry', { hasText: /Next retry in|Reconnecting/ }).waitFor({ timeout: WAIT_MS });
  result.offline = {
    banner: firstBanner,
    retry: await grace.locator('#offline-retry').textContent(),
    badge: await badgeText(grace),
    staleList: await grace.locator('#members.stale').count(),
    onlineShown: await grace.locator('#members .member[data-presence="online"]').count(),
    presenceText: await grace.locator('#members .member-presence').allTextContents(),
    newTaskDisabled: await grace.locator('#new-task').isDisabled(),
    draggable: await grace.locator('.card').first().getAttribute('draggable'),
    memberFormDisabled: await grace.locator('#member-form button[type="submit"]').isDisabled(),
    adaSaveDisabled: await ada.locator('#task-save').isDisabled(),
    adaOfflineNote: await ada.locator('#task-offline').isVisible(),
    adaTyped: await adaDialog.getByLabel('Description').inputValue(),
    loginVisible: (await grace.locator('#login-view').isVisible()) || (await ada.locator('#login-view').isVisible()),
  };
  // The banner counts: the time since the loss moves on by itself.
  await grace.waitForFunction(
    (before) => document.getElementById('offline-since').textContent !== before,
    firstSince,
    { timeout: WAIT_MS },
  );
  result.offline.since = [firstSince, await grace.locator('#offline-since').textContent()];
  await shot(grace, 'offline.png');
  step('offline');

  await control('start');
  const restartedAt = Date.now();
  for (const page of [ada, grace]) {
    await page.locator('#offline-banner').waitFor({ state: 'hidden', timeout: cfg.recoverWithinMs });
    await page.locator('#connection[data-state="connected"]').waitFor({ timeout: WAIT_MS });
  }
  result.recoveredMs = Date.now() - restartedAt;
  await memberRow(grace, cfg.ada.name).and(grace.locator('[data-presence="online"]')).waitFor({ timeout: WAIT_MS });
  await ada.locator('#task-save:not([disabled])').waitFor({ timeout: WAIT_MS });
  result.recovered = {
    adaOfflineNote: await ada.locator('#task-offline').isVisible(),
    newTaskDisabled: await grace.locator('#new-task').isDisabled(),
    staleList: await grace.locator('#members.stale').count(),
    loginVisible: (await grace.locator('#login-view').isVisible()) || (await ada.locator('#login-view').isVisible()),
  };
  // The edit typed while offline is saved now and reaches Grace live.
  await ada.locator('#task-save').click();
  await adaDialog.waitFor({ state: 'hidden', timeout: WAIT_MS });
  await grace
    .locator('.card', { hasText: t.overdue.title })
    .locator('.card-desc', { hasText: cfg.offlineDescription })
    .waitFor({ timeout: WAIT_MS });
  step('recovered');

  // --- 10. Grace leaves; Ada deletes the team (after a cancelled first try) ---------
  await memberRow(grace, cfg.grace.name).getByRole('button', { name: 'Leave' }).click();
  await grace.locator('#confirm-dialog').waitFor({ state: 'visible', timeout: WAIT_MS });
  await grace.locator('#confirm-ok').click();
  await grace.locator('#welcome').waitFor({ state: 'visible', timeout: WAIT_MS });
  await memberRow(ada, cfg.grace.name).waitFor({ state: 'detached', timeout: WAIT_MS });
  result.left = { graceTeams: await grace.locator('#team-list .team').count() };

  await ada.locator('#delete-team').click();
  await ada.locator('#confirm-dialog').waitFor({ state: 'visible', timeout: WAIT_MS });
  result.deleteConfirm = {
    title: await ada.locator('#confirm-title').textContent(),
    text: await ada.locator('#confirm-text').textContent(),
  };
  await ada.locator('#confirm-cancel').click();
  await ada.locator('#confirm-dialog').waitFor({ state: 'hidden', timeout: WAIT_MS });
  result.afterCancel = (await rest(cfg.ada.token, 'GET', `/api/teams/${teamId}`)).status;
  await ada.locator('#delete-team').click();
  await ada.locator('#confirm-ok').click();
  await ada.locator('#welcome').waitFor({ state: 'visible', timeout: WAIT_MS });
  result.afterDelete = (await rest(cfg.ada.token, 'GET', `/api/teams/${teamId}`)).status;
  step('left_and_deleted');
}

const SCENARIOS = { board, expiry, team };

async function run() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'huddle-chromium-'));
  let context = null;
  let browser = null;
  const deadline = setTimeout(() => {
    console.log(JSON.stringify({ ok: false, error: `deadline of ${cfg.deadlineMs} ms passed`, partial: result }));
    process.exit(2);
  }, cfg.deadlineMs ?? 45_000);
  try {
    const scenario = SCENARIOS[cfg.scenario];
    if (!scenario) throw new Error(`unknown scenario ${cfg.scenario}`);
    const options = { executablePath: cfg.chromium, headless: true, args: FLAGS, timeout: WAIT_MS * 2 };
    if (scenario === team) {
      // Two people: a browser with one context (cookies, storage) each.
      browser = await chromium.launch(options);
      result.browserVersion = browser.version();
      await scenario(browser);
    } else {
      context = await chromium.launchPersistentContext(userDataDir, {
        ...options,
        viewport: { width: 1360, height: 820 },
        deviceScaleFactor: 1,
      });
      result.browserVersion = context.browser()?.version() ?? null;
      await scenario(context);
    }
    console.log(JSON.stringify({ ok: true, result }));
  } catch (error) {
    console.log(JSON.stringify({ ok: false, error: String(error?.stack ?? error).slice(0, 4000), partial: result }));
    process.exitCode = 1;
  } finally {
    clearTimeout(deadline);
    stdinReader?.close();
    process.stdin.destroy(); // nothing more to read: let the process end
    if (context) await context.close().catch(() => {});
    if (browser) await browser.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

run();
