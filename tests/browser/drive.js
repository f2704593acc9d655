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

const result = { steps: [], console: [], pageErrors: [], websockets: {}, frames: [] };
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
  await page.locator('#login-form').waitFor({ state: 'visible', timeout: WAIT_MS });
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.locator('#login-submit').click();
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
  await dialog.getByLabel('Priority').selectOption('high');
  await dialog.getByLabel('Assignee').selectOption(String(cfg.b.id));
  await page.locator('#task-save').click();
  await dialog.waitFor({ state: 'hidden', timeout: WAIT_MS });
  await card(page, 'todo', cfg.titles.byA).waitFor({ timeout: WAIT_MS });
  result.createdByA = {
    meta: await card(page, 'todo', cfg.titles.byA).locator('.card-meta').innerText(),
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

  // --- 4. A conflicting edit: 409 VERSION_CONFLICT shows the current task ---------
  await card(page, 'in_progress', cfg.titles.byB).click();
  await dialog.waitFor({ state: 'visible', timeout: WAIT_MS });
  await dialog.getByLabel('Priority').selectOption('low');
  await asB('PATCH', `/api/tasks/${byB.id}`, { title: cfg.titles.renamedByB, version: byB.version });
  await page.locator('#task-outside').waitFor({ state: 'visible', timeout: WAIT_MS });
  await page.locator('#task-save').click();
  await page.locator('#task-conflict').waitFor({ state: 'visible', timeout: WAIT_MS });
  result.conflict = {
    message: await page.locator('#task-conflict').textContent(),
    titleShown: await dialog.getByLabel('Title').inputValue(),
    priorityShown: await dialog.getByLabel('Priority').inputValue(),
  };
  await dialog.getByLabel('Priority').selectOption('low');
  await page.locator('#task-save').click();
  await dialog.waitFor({ state: 'hidden', timeout: WAIT_MS });
  const renamed = card(page, 'in_progress', cfg.titles.renamedByB);
  await renamed.locator('.pill.low').waitFor({ timeout: WAIT_MS });
  result.afterConflict = await asB('GET', `/api/tasks/${byB.id}`);
  step('conflict_resolved');

  // --- 5. presence, silent refreshes, the picture -----------------------------------
  await page.locator('#members .avatar.online').first().waitFor({ timeout: WAIT_MS });
  result.onlineAvatars = await page.locator('#members .avatar.online').count();
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
  await page.waitForTimeout(1700); // let the arrival highlight fade for the picture
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

  // --- 8. without the socket.io bundle the page says so ----------------------------
  const bare = await context.newPage();
  await bare.route('**/web/vendor/socket.io.min.js', (route) =>
    route.fulfill({ status: 404, contentType: 'application/json', body: '{}' }),
  );
  await bare.goto(cfg.url + '/', { waitUntil: 'domcontentloaded' });
  await bare.locator('#banner').waitFor({ state: 'visible', timeout: WAIT_MS });
  result.noBundle = {
    banner: await bare.locator('#banner').textContent(),
    badge: await badgeText(bare),
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

const SCENARIOS = { board, expiry };

async function run() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'huddle-chromium-'));
  let context = null;
  const deadline = setTimeout(() => {
    console.log(JSON.stringify({ ok: false, error: `deadline of ${cfg.deadlineMs} ms passed`, partial: result }));
    process.exit(2);
  }, cfg.deadlineMs ?? 45_000);
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: cfg.chromium,
      headless: true,
      args: FLAGS,
      viewport: { width: 1360, height: 820 },
      deviceScaleFactor: 1,
      timeout: WAIT_MS * 2,
    });
    result.browserVersion = context.browser()?.version() ?? null;
    const scenario = SCENARIOS[cfg.scenario];
    if (!scenario) throw new Error(`unknown scenario ${cfg.scenario}`);
    await scenario(context);
    console.log(JSON.stringify({ ok: true, result }));
  } catch (error) {
    console.log(JSON.stringify({ ok: false, error: String(error?.stack ?? error).slice(0, 4000), partial: result }));
    process.exitCode = 1;
  } finally {
    clearTimeout(deadline);
    if (context) await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

run();
