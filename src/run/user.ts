/**
 * The user a container process runs as, resolved against the image's own /etc/passwd and
 * /etc/group the way runc's libcontainer/user GetExecUser does.
 */
import { RunError } from './errors.js';

/** The resolved identity of a container process. */
export interface ExecUser {
  uid: number;
  gid: number;
  /** Supplementary groups (never containing `gid`). */
  additionalGids: number[];
  home: string;
  /** The passwd name, when the uid has a passwd entry. */
  name?: string;
}

/** Largest uid/gid accepted (runc's maxId). */
const MAX_ID = 2 ** 31 - 1;

interface PasswdEntry { name: string; uid: number; gid: number; home: string }
interface GroupEntry { name: string; gid: number; members: string[] }

/** A decimal id, or undefined when `s` is not all digits; digits out of 0..2^31-1 are RunError('BAD_USER'). */
function parseId(s: string, what: string): number | undefined {
  if (!/^[0-9]+$/.test(s)) return undefined;
  const n = Number(s);
  if (n > MAX_ID) throw new RunError('BAD_USER', `${what} ${s} is out of range (0..${MAX_ID})`);
  return n;
}

/** An id field of a passwd/group line, or undefined when malformed. */
function idField(s: string | undefined): number | undefined {
  if (s === undefined || !/^[0-9]+$/.test(s)) return undefined;
  const n = Number(s);
  return n <= MAX_ID ? n : undefined;
}

/** Non-empty, non-comment lines split on ':'. */
function records(text: string | undefined): string[][] {
  if (text === undefined) return [];
  return text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')).map((l) => l.split(':'));
}

/** passwd lines `name:pw:uid:gid:gecos:home:shell`; lines without a name or numeric uid/gid are skipped. */
function parsePasswd(text: string | undefined): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const f of records(text)) {
    const uid = idField(f[2]);
    const gid = idField(f[3]);
    if (!f[0] || uid === undefined || gid === undefined) continue;
    out.push({ name: f[0], uid, gid, home: f[5] ?? '' });
  }
  return out;
}

/** group lines `name:pw:gid:user1,user2`; lines without a name or numeric gid are skipped. */
function parseGroup(text: string | undefined): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const f of records(text)) {
    const gid = idField(f[2]);
    if (!f[0] || gid === undefined) continue;
    out.push({ name: f[0], gid, members: (f[3] ?? '').split(',').map((m) => m.trim()).filter((m) => m !== '') });
  }
  return out;
}

/**
 * Resolve a user spec ('' = root; 'name', 'uid', 'name:group', 'uid:gid', 'name:gid',
 * 'uid:group') against the image's /etc/passwd and /etc/group text (undefined = file absent).
 * A numeric user matches only by uid: with a passwd entry it takes that entry's gid, home and
 * name, else it is used as given with gid 0 and home '/'. A user name must exist in passwd
 * (RunError('NO_SUCH_USER')). A group name must exist in group (RunError('NO_SUCH_GROUP')); a
 * numeric gid is used as given (its entry when present). Without an explicit group the
 * supplementary groups are those listing the user's name as a member, minus the primary gid
 * and duplicates; with one there are none.
 */
export function resolveUser(spec: string, passwd: string | undefined, group: string | undefined): ExecUser {
  const colon = spec.indexOf(':');
  const userArg = colon < 0 ? spec : spec.slice(0, colon);
  const groupArg = colon < 0 ? '' : spec.slice(colon + 1);
  const user: ExecUser = { uid: 0, gid: 0, additionalGids: [], home: '/' };

  // An empty user is uid 0, looked up like any numeric uid (root's home comes from passwd).
  const uidArg = userArg === '' ? 0 : parseId(userArg, 'uid');
  const users = parsePasswd(passwd);
  const entry = uidArg !== undefined ? users.find((u) => u.uid === uidArg) : users.find((u) => u.name === userArg);
  if (entry) {
    user.uid = entry.uid;
    user.gid = entry.gid;
    user.home = entry.home || '/';
    user.name = entry.name;
  } else if (uidArg !== undefined) {
    user.uid = uidArg;
  } else {
    throw new RunError('NO_SUCH_USER', `unable to find user ${userArg}: no matching entries in passwd file`);
  }

  const groups = parseGroup(group);
  if (groupArg !== '') {
    const gidArg = parseId(groupArg, 'gid');
    const g = gidArg !== undefined ? groups.find((x) => x.gid === gidArg) : groups.find((x) => x.name === groupArg);
    if (g) user.gid = g.gid;
    else if (gidArg !== undefined) user.gid = gidArg;
    else throw new RunError('NO_SUCH_GROUP', `unable to find group ${groupArg}: no matching entries in group file`);
  } else if (user.name !== undefined) {
    const name = user.name;
    const seen = new Set<number>([user.gid]);
    for (const g of groups) {
      if (g.members.includes(name) && !seen.has(g.gid)) {
        seen.add(g.gid);
        user.additionalGids.push(g.gid);
      }
    }
  }
  return user;
}
