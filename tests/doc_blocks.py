#!/usr/bin/env python3
"""Runs the shell blocks of a Markdown document as written (ctest "docs: <file> runs as written").

    doc_blocks.py --source SRC --build BUILD [--path DIR]... DOC.md

The blocks run in order, in a fresh temporary folder laid out like a checkout after the Quickstart: every
top-level entry of SRC (examples/, docs/, scripts/, deploy/, ...) is a symbolic link to the source, `build`
links to BUILD, and `./var` does not exist yet. The programs' folders of BUILD (--path) come first on PATH,
so a document says `policyctl`, `policy-gateway`, as an operator with the package installed would.

Blocks
  ```sh / ```bash / ```shell   run as one script with `set -eo pipefail`; it must exit 0.
  ```console                   each `$ ` line is a command (a line ending in `\\` continues it); the lines
                               up to the next command are its expected output (stdout and stderr): each
                               must appear, in order, among the lines it printed (runs of blanks compare
                               equal; `…` matches anything, and a line of just `…` matches nothing in
                               particular). A command must exit 0, unless the next command is `echo $?`,
                               whose output is then the previous command's exit code.
  Shell variables and the current folder carry from one block and command to the next.
  A fence without a language whose first line looks like a command is an error: label it `sh`/`console`,
  or `text` if it is not meant to run.

Directives: HTML comments just above a block (they do not render).
  <!-- doc-test: skip: REASON -->        not run; the reason is printed (needs what the suite cannot have)
  <!-- doc-test: fails -->               an `sh` block that must exit non-zero (it shows a refusal)
  <!-- doc-test: background -->          an `sh` block that starts a daemon: run in the background,
                                         stopped (SIGTERM, then SIGKILL after 10 s) at the end or at a
                                         standalone <!-- doc-test: stop -->
  <!-- doc-test: wait-for: PATH -->      after the block, wait until PATH exists (a socket; 30 s): of a
                                         `background` block, or of a daemon an `sh` block left running with `&`
  <!-- doc-test: timeout: SECONDS -->    the block's limit (default 120)
Exit status: 0 every block ran as written, 1 one did not (file:line, the command, what it printed).
"""

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SHELL_LANGS = {"sh", "bash", "shell"}
LOOKS_LIKE_SHELL = re.compile(r"^\s*(\$ |policyctl\b|policy-gateway\b|\./scripts/|\./build/|sudo\b|cmake\b|export\b)")
DIRECTIVE = re.compile(r"^\s*<!--\s*doc-test:\s*(.*?)\s*-->\s*$")


class Block:
    def __init__(self, line, lang, body, directives):
        self.line = line  # 1-based line of the opening fence
        self.lang = lang
        self.body = body  # list of lines
        self.directives = directives  # list of strings


def parse(path):
    """Returns a list of Block and ('stop', line) items, in document order."""
    items, pending, errors = [], [], []
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        m = DIRECTIVE.match(line)
        if m:
            if m.group(1) == "stop":
                items.append(("stop", i + 1))
            else:
                pending.append(m.group(1))
            i += 1
            continue
        fence = re.match(r"^(\s*)(```+|~~~+)\s*([A-Za-z0-9_+-]*)", line)
        if fence:
            indent, marker, lang = fence.group(1), fence.group(2), fence.group(3).lower()
            start = i + 1
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(marker):
                body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
                i += 1
            i += 1
            first = next((b for b in body if b.strip()), "")
            if lang in SHELL_LANGS or lang == "console":
                items.append(Block(start, lang, body, pending))
            elif lang == "" and LOOKS_LIKE_SHELL.match(first):
                errors.append(f"{path}:{start}: a block without a language that looks like shell ({first.strip()!r}):"
                              " label it ```sh or ```console, or ```text if it is not meant to run")
            elif pending:
                errors.append(f"{path}:{start}: doc-test directives {pending} above a ```{lang} block, which is not run")
            pending = []
            continue
        if line.strip():
            if pending:
                errors.append(f"{path}:{i + 1}: doc-test directives {pending} are not followed by a block")
            pending = []
        i += 1
    return items, errors


def directive(block, name):
    for d in block.directives:
        if d == name:
            return ""
        if d.startswith(name + ":"):
            return d[len(name) + 1:].strip()
    return None


def console_commands(block):
    """[(line, command, [expected output lines])] of a console block."""
    commands = []
    body = block.body
    i = 0
    while i < len(body):
        text = body[i]
        if text.startswith("$ "):
            line = block.line + 1 + i
            cmd = text[2:]
            while cmd.endswith("\\") and i + 1 < len(body):
                i += 1
                cmd = cmd + "\n" + body[i]
            commands.append([line, cmd, []])
        elif commands:
            commands[-1][2].append(text)
        elif text.strip():
            raise ValueError(f"line {block.line + 1 + i}: output before any `$ ` command: {text!r}")
        i += 1
    return commands


def normalize(s):
    return re.sub(r"\s+", " ", s.strip())


def expected_matches(expected, printed):
    """Every expected line (bar `…` lines) matches a printed line, in order. Returns the first that does not."""
    got = [normalize(p) for p in printed]
    at = 0
    for want in expected:
        w = normalize(want)
        if w in ("", "…", "..."):
            continue
        pattern = re.compile("^" + ".*".join(re.escape(part) for part in w.split("…")) + "$")
        while at < len(got) and not pattern.match(got[at]):
            at += 1
        if at == len(got):
            return want
        at += 1
    return None


class Shell:
    """Runs scripts one after another, carrying shell variables and the current folder between them."""

    def __init__(self, work, env):
        self.work, self.env = work, env
        self.state = os.path.join(work, ".doc-test", "state")
        self.cwd_file = os.path.join(work, ".doc-test", "cwd")
        os.makedirs(os.path.dirname(self.state))
        open(self.state, "w").close()
        with open(self.cwd_file, "w") as f:
            f.write(work)
        base = subprocess.run(["bash", "--norc", "--noprofile", "-c", "compgen -v"], env=env, capture_output=True,
                              text=True).stdout.split()
        self.base = " ".join(base + ["__osh_rc", "__osh_v", "__osh_base"])
        self.background = []
        self.groups = []  # process groups of the blocks run so far: what they left running is stopped at the end

    def script(self, body, strict, save=True):
        return "\n".join([
            f"cd {shlex.quote(open(self.cwd_file).read().rstrip(chr(10)))}",
            f"source {shlex.quote(self.state)}",
            f"__osh_base={shlex.quote(' ' + self.base + ' ')}",
            "trap '__osh_rc=$?; if [ $__osh_rc -eq 0 ]; then { for __osh_v in $(compgen -v); do case \"$__osh_base\" in"
            " *\" $__osh_v \"*) ;; *) declare -p \"$__osh_v\" 2>/dev/null;; esac; done; } > "
            + shlex.quote(self.state + ".new") + " && mv " + shlex.quote(self.state + ".new") + " "
            + shlex.quote(self.state) + " && pwd > " + shlex.quote(self.cwd_file) + "; fi; exit $__osh_rc' EXIT"
            if save else "",
            "set -eo pipefail" if strict else "set -o pipefail",
            body,
        ]) + "\n"

    def run(self, body, strict, timeout):
        """(exit code, output); (None, output so far) when it ran out of time (its whole group is killed).

        Output goes to a file, not a pipe, so a block may leave a daemon running with `&` (as a person at a
        terminal would): the block is done when its shell exits, and what it left running is stopped with
        the background blocks (each block is a process group of its own)."""
        out_path = os.path.join(self.work, ".doc-test", "output")
        open(out_path, "wb").close()
        # Appending: what a daemon left by an earlier block still writes lands after, never over, this output.
        with open(out_path, "ab") as out:
            p = subprocess.Popen(["bash", "--norc", "--noprofile", "-c", self.script(body, strict)], env=self.env,
                                 cwd=self.work, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        self.groups.append(p.pid)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            rc = None
        with open(out_path, "rb") as f:
            return rc, f.read().decode("utf-8", "replace")

    def start(self, body, log):
        out = open(log, "w")
        p = subprocess.Popen(["bash", "--norc", "--noprofile", "-c", self.script(body, True, save=False)], env=self.env,
                             cwd=self.work, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.background.append((p, log))
        return p

    def stop_background(self):
        for group in self.groups:  # daemons a block left running with `&`
            try:
                os.killpg(group, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p, _ in self.background:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.time() + 10
        for p, _ in self.background:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.background = []
        for group in self.groups:  # what ignored SIGTERM
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.groups = []


def checkout(source, build, work):
    for name in os.listdir(source):
        if name in ("var", "dist", ".git") or name.startswith("build"):
            continue
        os.symlink(os.path.join(source, name), os.path.join(work, name))
    os.symlink(build, os.path.join(work, "build"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", required=True, help="the source tree (the checkout the document describes)")
    ap.add_argument("--build", required=True, help="the build folder (./build of that checkout)")
    ap.add_argument("--path", action="append", default=[], help="a folder of programs to put first on PATH")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (printed) for a look")
    ap.add_argument("doc")
    args = ap.parse_args()
    doc = os.path.relpath(args.doc, args.source)

    items, errors = parse(args.doc)
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        return 1

    work = tempfile.mkdtemp(prefix="doc-test.")
    checkout(os.path.abspath(args.source), os.path.abspath(args.build), work)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.abspath(p) for p in args.path] + [env.get("PATH", "/usr/bin:/bin")])
    env["HOME"] = os.path.join(work, ".doc-test", "home")
    env.pop("CDPATH", None)
    shell = Shell(work, env)
    os.makedirs(env["HOME"])
    failed = None
    ran = skipped = 0
    try:
        for item in items:
            if isinstance(item, tuple):
                shell.stop_background()
                continue
            block = item
            where = f"{doc}:{block.line}"
            reason = directive(block, "skip")
            if reason is not None:
                print(f"{where}: skipped: {reason or '(no reason given)'}")
                skipped += 1
                continue
            timeout = float(directive(block, "timeout") or 120)
            if block.lang == "console":
                try:
                    commands = console_commands(block)
                except ValueError as e:
                    failed = f"{where}: {e}"
                    break
                rc_before = 0
                for n, (line, cmd, expected) in enumerate(commands):
                    print(f"{doc}:{line}: $ {cmd}")
                    if cmd.strip() == "echo $?":
                        rc, out = 0, f"{rc_before}\n"
                    else:
                        rc, out = shell.run(cmd, strict=False, timeout=timeout)
                    sys.stdout.write(out)
                    shows_code = n + 1 < len(commands) and commands[n + 1][1].strip() == "echo $?"
                    if rc is None:
                        failed = f"{doc}:{line}: `{cmd}` did not finish within {timeout:.0f} s"
                    elif rc != 0 and not shows_code:
                        failed = f"{doc}:{line}: `{cmd}` exited {rc}"
                    else:
                        missing = expected_matches(expected, out.split("\n"))
                        if missing is not None:
                            failed = f"{doc}:{line}: `{cmd}` did not print the line the document shows: {missing!r}"
                    if failed:
                        break
                    rc_before = rc
                if failed:
                    break
            elif directive(block, "background") is not None:
                print(f"{where}: started in the background:")
                print("\n".join("  " + b for b in block.body))
                log = os.path.join(work, ".doc-test", f"background-{block.line}.log")
                p = shell.start("\n".join(block.body), log)
                path = directive(block, "wait-for")
                if path:
                    deadline = time.time() + 30
                    target = os.path.join(work, path)
                    while not os.path.exists(target) and p.poll() in (None, 0) and time.time() < deadline:
                        time.sleep(0.05)
                    if not os.path.exists(target):
                        failed = (f"{where}: {path} did not appear within 30 s (the block "
                                  f"{'exited ' + str(p.returncode) if p.poll() is not None else 'is still running'});"
                                  f" it printed:\n{open(log).read()}")
                        break
            else:
                print(f"{where}:")
                print("\n".join("  " + b for b in block.body))
                rc, out = shell.run("\n".join(block.body), strict=True, timeout=timeout)
                sys.stdout.write(out)
                fails = directive(block, "fails") is not None
                if rc is None:
                    failed = f"{where}: the block did not finish within {timeout:.0f} s"
                elif fails and rc == 0:
                    failed = f"{where}: the block should fail (doc-test: fails) but exited 0"
                elif not fails and rc != 0:
                    failed = f"{where}: the block exited {rc}"
                else:
                    path = directive(block, "wait-for")  # e.g. the socket of a daemon the block left running with &
                    if path:
                        target, deadline = os.path.join(work, path), time.time() + 30
                        while not os.path.exists(target) and time.time() < deadline:
                            time.sleep(0.05)
                        if not os.path.exists(target):
                            failed = f"{where}: {path} did not appear within 30 s of the block"
                if failed:
                    break
            ran += 1
    finally:
        logs = [log for _, log in shell.background]
        shell.stop_background()
        if failed:
            for log in logs:
                print(f"--- {os.path.basename(log)} (a background block's output):\n{open(log).read()}")
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if failed:
        print(f"FAILED {failed}", file=sys.stderr)
        return 1
    print(f"{doc}: {ran} block(s) ran as written, {skipped} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
