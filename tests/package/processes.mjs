// Child servers for the package tests (next start, the node-proxy example, wrangler dev): each in
// its own process group, so stopping it stops what it spawned (workerd under wrangler).
import { spawn } from "node:child_process";
import { once } from "node:events";

/** Starts `command` in its own process group, its output kept in `child.output`. */
export function startProcess(command, args, { cwd, env = {} }) {
  const child = spawn(command, args, { cwd, env: { ...process.env, ...env }, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  child.output = "";
  child.stdout.on("data", (chunk) => (child.output += chunk));
  child.stderr.on("data", (chunk) => (child.output += chunk));
  return child;
}

/** SIGTERM to the group, SIGKILL after 5 s, and SIGKILL once more for anything left in it. */
export async function stopProcess(child) {
  const kill = (signal) => {
    try {
      process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  };
  if (child.exitCode === null && child.signalCode === null) {
    const exited = once(child, "exit");
    kill("SIGTERM");
    const timer = setTimeout(() => kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(timer);
  }
  kill("SIGKILL");
}

/** Resolves with the answer when `url` answers 200; rejects if `child` exits or `ms` pass first. */
export async function ready(child, url, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`exited (${child.exitCode}) before serving ${url}:\n${child.output}`);
    try {
      const response = await fetch(url);
      if (response.ok) return response;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} not ready in ${ms} ms:\n${child.output}`);
}

export { freePort } from "../e2e/harness.mjs";
