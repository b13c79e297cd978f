"""Lua scripts of the store. Each runs atomically and touches only keys of one series
(one cluster slot when keys are hash-tagged), except ``SET_LIVE``, ``WRITE_OFFICIALS`` and
``WRITE_LIVE_CLOSED_MANY``, which a single Redis runs for the keys of many series at once
(never sent to a cluster)."""

from __future__ import annotations

from typing import Final

# Shared tail of the writing scripts: recompute klines_meta from the zset (``z``, ``meta``
# and ARGV[1] = updated_ms in scope); leaves ``count`` and ``latest`` (score or false).
_META_UPDATE: Final = r"""
local count = redis.call('ZCARD', z)
local latest = false
if count > 0 then
  local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  latest = last[2]
  redis.call('HSET', meta, 'earliest', first[2], 'latest', latest, 'count', count,
             'updated_ms', ARGV[1])
else
  redis.call('HDEL', meta, 'earliest', 'latest')
  redis.call('HSET', meta, 'count', 0, 'updated_ms', ARGV[1])
end
"""

WRITE_CANDLES: Final = (
    r"""
-- Store official candles, keeping exactly one member per open time.
-- KEYS[1] klines_z   KEYS[2] klines_meta   KEYS[3] klines_gaps
-- KEYS[4] klines_scratch (a scratch key in the series' slot, deleted before returning)
-- ARGV[1] updated_ms   ARGV[2] notification channel   ARGV[3] symbol   ARGV[4] interval
-- ARGV[5] n candles    ARGV[6] n gaps
-- ARGV[7], ARGV[8] the open times a row may replace a different stored row in
--   ('-inf'/'+inf' allowed); outside them a row only fills a missing open time (a REST
--   row of a candle that closed just now may be stale; a late stream row is not trusted
--   over a reconciled one)
-- ARGV[9] the n open times, space-separated; ARGV[10] the n members (compact JSON, never
--   a raw newline), each followed by a newline (or newline-separated): two arguments,
--   not 2n (the client packs and Redis parses a thousand arguments a row at a time:
--   several times the cost of one blob)
-- then n-gaps pairs (first missing open, next open)
-- Returns {added, replaced, unchanged, latest or false, count, kept, replaced opens, filled}:
-- kept = rows that differ from the stored one but were not allowed to replace it;
-- filled = of added, the rows outside the replace window (they filled a missing open time)
-- ZADD NX would compare members, not scores: a changed official row would be added
-- beside the old one. Here an equal member is a no-op; any other member at that score
-- (including duplicates left by older code) is removed before the new one is added.
local z, meta, gaps, scratch = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local n, ng = tonumber(ARGV[5]), tonumber(ARGV[6])
local rfrom, runtil = tonumber(ARGV[7]), tonumber(ARGV[8])
-- split by plain find (memchr), not a pattern: string.gmatch took ~2 ms of a 1,000-row
-- write's ~5.5, this ~1
local function split(s, sep)
  local out, pos, find, sub = {}, 1, string.find, string.sub
  while true do
    local e = find(s, sep, pos, true)
    if e == nil then
      if pos <= #s then out[#out + 1] = sub(s, pos) end
      return out
    end
    if e > pos then out[#out + 1] = sub(s, pos, e - 1) end
    pos = e + 1
  end
end
local opens, members = split(ARGV[9], ' '), split(ARGV[10], '\n')
if #opens ~= n or #members ~= n then
  return redis.error_reply('ERR ' .. n .. ' candles announced, ' .. #opens .. ' open times and '
    .. #members .. ' members given')
end
local added, replaced, unchanged, kept, filled = 0, 0, 0, 0, 0
local replaced_opens = {}
if n > 0 then
  local lo, hi, nums = math.huge, -math.huge, {}
  for i = 1, n do
    local s = tonumber(opens[i])
    nums[i] = s
    if s < lo then lo = s end
    if s > hi then hi = s end
  end
  local existing = redis.call('ZRANGE', z, lo, hi, 'BYSCORE', 'WITHSCORES')
  local have, many = {}, {}
  for i = 1, #existing, 2 do
    local s = tonumber(existing[i + 1])
    if have[s] == nil then have[s] = existing[i] else many[s] = true end
  end
  local args, k, pos = {}, 0, {}
  for i = 1, n do
    local s = nums[i]
    local member = members[i]
    local old = have[s]
    if old == member and not many[s] then
      unchanged = unchanged + 1
    elseif old ~= nil and not many[s] and (s < rfrom or s > runtil) then
      kept = kept + 1
    elseif pos[s] ~= nil then  -- a later row of an open time this batch already adds
      args[pos[s] + 1] = member
      have[s] = member
    else
      if old ~= nil then
        redis.call('ZREMRANGEBYSCORE', z, s, s)
        replaced = replaced + 1
        replaced_opens[#replaced_opens + 1] = opens[i]
      else
        added = added + 1
        if s < rfrom or s > runtil then filled = filled + 1 end
      end
      have[s] = member
      many[s] = nil
      args[k + 1] = opens[i]
      args[k + 2] = member
      pos[s] = k + 1
      k = k + 2
    end
  end
  -- A listpack (a series of up to zset-max-listpack-entries candles) takes each ZADD
  -- member by scanning from its head: a thousand rows cost ~35 ms of Redis, a thousand
  -- more ~80 ms. So many rows go to a skiplist scratch key first (its first member
  -- longer than zset-max-listpack-value makes it one) and are merged by ZUNIONSTORE,
  -- which writes the result as a listpack again when it fits: ~5 ms. A member equal in
  -- both has one open time, so MAX keeps it once.
  local target = z
  if k >= 128 then
    local enc = redis.call('OBJECT', 'ENCODING', z)
    if enc == false or enc == 'listpack' or enc == 'ziplist' then target = scratch end
  end
  if target == scratch then
    redis.call('DEL', scratch)
    redis.call('ZADD', scratch, 0, string.rep('~', 4096))
  end
  for j = 1, k, 2000 do
    redis.call('ZADD', target, unpack(args, j, math.min(j + 1999, k)))
  end
  if target == scratch then
    redis.call('ZREM', scratch, string.rep('~', 4096))
    redis.call('ZUNIONSTORE', z, 2, z, scratch, 'AGGREGATE', 'MAX')
    redis.call('DEL', scratch)
  end
end
local gbase = 11
for i = 0, ng - 1 do
  local first, nxt = ARGV[gbase + 2 * i], ARGV[gbase + 2 * i + 1]
  redis.call('ZADD', gaps, first, first .. ':' .. nxt)
end
"""
    + _META_UPDATE
    + r"""if added + replaced + ng > 0 then
  redis.call('PUBLISH', ARGV[2], '{"symbol":"' .. ARGV[3] .. '","interval":"' .. ARGV[4]
    .. '","latest":' .. (latest or 'null') .. ',"count":' .. count
    .. ',"added":' .. added .. ',"replaced":' .. replaced .. '}')
end
return {added, replaced, unchanged, latest, count, kept, replaced_opens, filled}
"""
)

# a blob into its fields at each ``sep`` (a plain find, not a pattern), empty ones too
_FIELDS: Final = r"""
local function fields(s, sep)
  local out, pos, find, sub = {}, 1, string.find, string.sub
  while true do
    local e = find(s, sep, pos, true)
    if e == nil then
      out[#out + 1] = sub(s, pos)
      return out
    end
    out[#out + 1] = sub(s, pos, e - 1)
    pos = e + 1
  end
end
"""

# ``WRITE_CANDLES`` of many series in one call (a single Redis only: the keys are
# arguments, not declared; a cluster sends one ``WRITE_CANDLES`` per series). At 00:00 UTC
# every followed series' final candle arrives at once: thousands of EVALSHAs, each
# packed, run and answered on its own, cost several times one call per batch.
# ARGV[1]: one blob, the series' records separated by \30 (ASCII record separator), each
# record its 4 KEYS then its ARGV (exactly as a WRITE_CANDLES call of its own would take
# them) separated by \31 (unit separator); neither occurs in a key or in compact JSON. One
# argument, not 15 a series: packing 16,000 arguments for 1,000 finals cost the stream
# process 40-50 ms of CPU at 00:00 (redis-py packs each on its own); one blob, ~20 ms.
# Returns the list of WRITE_CANDLES' replies, one per series in order.
WRITE_OFFICIALS: Final = (
    "local function write_series(KEYS, ARGV)\n"
    + WRITE_CANDLES
    + "end\n"
    + _FIELDS
    + r"""local out = {}
for _, record in ipairs(fields(ARGV[1], '\30')) do
  local f = fields(record, '\31')
  local res = write_series({f[1], f[2], f[3], f[4]}, {unpack(f, 5)})
  if res.err then return res end
  out[#out + 1] = res
end
return out
"""
)

# a newline-separated blob into its parts (a plain find, not a pattern: this runs over
# megabytes); see SET_LIVE for why blobs rather than an argument each
_SPLIT: Final = _FIELDS + "local function split(blob) return fields(blob, '\\n') end\n"

WRITE_LIVE_CLOSED: Final = r"""
-- Keep closed live candles until their official candles are stored, so a chart never
-- shows a hole however long the official data takes (one member per open time).
-- KEYS[1] live_closed   KEYS[2] klines_meta
-- ARGV[1] TTL ms   ARGV[2] the most to keep   then pairs (open_ms, live JSON)
-- Returns the number kept.
local z = KEYS[1]
for i = 3, #ARGV, 2 do
  redis.call('ZREMRANGEBYSCORE', z, ARGV[i], ARGV[i])
  redis.call('ZADD', z, ARGV[i], ARGV[i + 1])
end
local latest = redis.call('HGET', KEYS[2], 'latest')
if latest then redis.call('ZREMRANGEBYSCORE', z, '-inf', latest) end
redis.call('ZREMRANGEBYRANK', z, 0, -(tonumber(ARGV[2]) + 1))
local kept = redis.call('ZCARD', z)
if kept > 0 then redis.call('PEXPIRE', z, ARGV[1]) end
return kept
"""

WRITE_LIVE_CLOSED_MANY: Final = (
    "local function write_series(KEYS, ARGV)\n"
    + WRITE_LIVE_CLOSED
    + "end\n"
    + _SPLIT
    + r"""
-- WRITE_LIVE_CLOSED of many series in one call (at 00:00 UTC every followed series
-- closes at once: a call per series, 9,600 of them, was most of that flush's work).
-- ARGV[1] the keys: each series' live_closed then its klines_meta, newline-separated
-- ARGV[2] the closed live candles (compact JSON, never a raw newline), newline-separated
-- ARGV[3] per series, space-separated: TTL ms, n, then the open times of its n candles
-- (the next n values of ARGV[2], in order)   ARGV[4] the most to keep per series
-- The keys are not declared (KEYS): this runs on a single Redis only, never on a
-- cluster. Returns the number of series written.
local keys, values = split(ARGV[1]), split(ARGV[2])
local layout = {}
for word in string.gmatch(ARGV[3], '%S+') do layout[#layout + 1] = word end
-- checked before anything is written (a script's writes are not rolled back)
local series, candles, l = 0, 0, 1
while l < #layout do
  local n = tonumber(layout[l + 1])
  series, candles, l = series + 1, candles + n, l + 2 + n
end
if l ~= #layout + 1 or 2 * series ~= #keys or candles ~= #values then
  return redis.error_reply('ERR live closed: ' .. #keys .. ' keys, ' .. #values ..
                           ' values and a layout of ' .. #layout .. ' do not match')
end
local v = 1
l = 1
for s = 1, series do
  local n = tonumber(layout[l + 1])
  local args = {layout[l], ARGV[4]}
  for j = 1, n do
    args[2 * j + 1] = layout[l + 1 + j]
    args[2 * j + 2] = values[v]
    v = v + 1
  end
  write_series({keys[2 * s - 1], keys[2 * s]}, args)
  l = l + 2 + n
end
return series
"""
)

READ_WITH_LIVE: Final = r"""
-- One consistent snapshot for a chart read.
-- KEYS[1] klines_z   KEYS[2] klines_meta   KEYS[3] live_candle   KEYS[4] live_closed
-- ARGV[1] min score ('-inf' or ms)   ARGV[2] max score ('+inf' or ms)   ARGV[3] limit
-- ARGV[4] 'first' (oldest first from min) or 'last' (the newest up to max)
-- ARGV[5] the version the caller has cached ('' for none)
-- Returns {members (ascending) or false when ARGV[5] is still current, latest or false,
--          live JSON or false, version, closed live candles after latest (ascending)}.
-- The version changes with every write of the series (the writing scripts set
-- updated_ms and count in the same transaction).
local meta = redis.call('HMGET', KEYS[2], 'updated_ms', 'count', 'latest')
local version = tostring(meta[1]) .. ':' .. tostring(meta[2])
local live = redis.call('GET', KEYS[3])
local closed = redis.call('ZRANGE', KEYS[4], meta[3] and ('(' .. meta[3]) or '-inf', '+inf',
                          'BYSCORE')
if ARGV[5] ~= '' and ARGV[5] == version then
  return {false, meta[3], live, version, closed}
end
local members
if ARGV[4] == 'last' then
  members = redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[1], 'BYSCORE', 'REV', 'LIMIT', 0, ARGV[3])
  local n = #members
  for i = 1, math.floor(n / 2) do
    members[i], members[n - i + 1] = members[n - i + 1], members[i]
  end
else
  members = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'BYSCORE', 'LIMIT', 0, ARGV[3])
end
return {members, meta[3], live, version, closed}
"""

REMOVE_MEMBERS: Final = (
    r"""
-- Remove given members (repair of rows that break an invariant) and fix the meta hash.
-- KEYS[1] klines_z   KEYS[2] klines_meta
-- ARGV[1] updated_ms   ARGV[2..] members
-- Returns {removed, count}.
local z, meta = KEYS[1], KEYS[2]
local removed = 0
for i = 2, #ARGV do
  removed = removed + redis.call('ZREM', z, ARGV[i])
end
"""
    + _META_UPDATE
    + r"""return {removed, count}
"""
)

SET_LIVE: Final = (
    r"""
-- Set many live keys in one command (the per-command cost of a pipeline of thousands
-- of SETs is most of a whole-market live write); a flush's keys go in calls of at most
-- store.SET_LIVE_PER_CALL, as one call holds Redis for every other client.
-- ARGV[1] the keys, newline-separated, grouped by TTL   ARGV[2] their values (compact
-- JSON, never a raw newline), newline-separated, in the same order   then one
-- (ttl_ms, count) pair per group of consecutive keys. Two blobs rather than 2n arguments:
-- the client packs, and Redis parses, thousands of arguments one at a time at several
-- times the cost of splitting two strings. The keys are not declared (KEYS): this runs
-- on a single Redis only, never on a cluster. Returns the number of keys set.
"""
    + _SPLIT
    + r"""local keys, values = split(ARGV[1]), split(ARGV[2])
local n = #keys
if #values ~= n then
  return redis.error_reply('ERR ' .. n .. ' live keys and ' .. #values .. ' values given')
end
local i = 1
local g = 3
while i <= n do
  local ttl, last = ARGV[g], i + tonumber(ARGV[g + 1]) - 1
  for j = i, last do
    redis.call('SET', keys[j], values[j], 'PX', ttl)
  end
  i = last + 1
  g = g + 2
end
return n
"""
)

# -- leases (store.leases): one owner per symbol, fenced by an epoch -------------------

LEASE_ACQUIRE: Final = r"""
-- Take a free lease, or keep one already ours.
-- KEYS[1] lease   KEYS[2] lease_epoch   ARGV[1] worker id   ARGV[2] TTL ms
-- Returns the epoch of our ownership (a new one, INCRed, when taken now), 0 if another
-- worker holds it.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
return 0
"""

LEASE_RENEW: Final = r"""
-- Extend a lease still ours at the epoch we took it in.
-- KEYS[1] lease   KEYS[2] lease_epoch   ARGV[1] worker id   ARGV[2] TTL ms   ARGV[3] epoch
-- Returns 1 if renewed, 0 if lost (expired, taken, or re-taken at another epoch).
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

LEASE_RELEASE: Final = r"""
-- Give a lease up if still ours (a lease another worker took meanwhile stays its).
-- KEYS[1] lease   ARGV[1] worker id   Returns 1 if released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

WORKERS_BEAT: Final = r"""
-- Say this worker is alive until now + TTL (Redis time: no clock skew between hosts),
-- drop the expired ones, and list the living.
-- KEYS[1] lease_workers   ARGV[1] worker id   ARGV[2] TTL ms ('0': leaving)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if tonumber(ARGV[2]) > 0 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

FENCE_CHECK: Final = r"""
-- The symbols whose stored epoch is not the one given (their writes are refused).
-- KEYS: lease_epoch keys   ARGV: the epochs, same order   Returns the 1-based indexes.
local bad = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[i] then bad[#bad + 1] = i end
end
return bad
"""

# -- one budget per exchange IP (store.budget) -----------------------------------------

BUDGET_TAKE: Final = r"""
-- Take weight from one fixed window of the IP's shared budget if it fits.
-- KEYS[1] the window's counter   KEYS[2] the IP's pause (a 429's or 418's end, exchange
-- ms; one slot with KEYS[1])   ARGV[1] weight   ARGV[2] ceiling   ARGV[3] what this
-- process knows was used (the exchange's header; raises the count)   ARGV[4] TTL ms
-- ARGV[5] weight this process carried into the window (requests of the last one that
-- the exchange may count in this one), added to the count once   ARGV[6] a pause this
-- process was told of, ending then (0: none)   ARGV[7] now (exchange ms)
-- KEYS[3] SET of the processes that asked in the window (one slot with KEYS[1])
-- ARGV[8] this process's token
-- Returns {1 taken or 0 not, the window's count after, the pause's end (0: none), the
-- processes that asked in the window}. An empty window takes any weight (a request
-- heavier than its ceiling goes alone in a fresh window); nothing is taken while the IP
-- is paused.
redis.call('SADD', KEYS[3], ARGV[8])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
local takers = redis.call('SCARD', KEYS[3])
local used = tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[5] or '0')
local known = tonumber(ARGV[3])
if known > used then used = known end
local now = tonumber(ARGV[7] or '0')
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
local told = tonumber(ARGV[6] or '0')
if told > pause and told > now then
  pause = told
  redis.call('SET', KEYS[2], told, 'PX', told - now)
end
redis.call('SET', KEYS[1], used, 'PX', ARGV[4])
if pause > now then
  return {0, used, pause, takers}
end
local w = tonumber(ARGV[1])
if used + w <= tonumber(ARGV[2]) or used == 0 then
  used = used + w
  redis.call('SET', KEYS[1], used, 'PX', ARGV[4])
  return {1, used, 0, takers}
end
return {0, used, 0, takers}
"""

ATTEMPT_TAKE: Final = r"""
-- One connection attempt from the IP's sliding window, if there is room.
-- KEYS[1] ZSET of attempt times   ARGV[1] allowed   ARGV[2] window ms   ARGV[3] member
-- Returns {0, used} when taken, {ms to wait, used} when not (Redis time).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
if used < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {0, used + 1}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {math.max(1, tonumber(oldest[2]) + window - now), used}
"""

RESUME_SET: Final = r"""
-- Store a symbol's resume point if the writer's epoch is still the symbol's (one slot:
-- the epoch and the resume point share the symbol's hash tag on a cluster).
-- KEYS[1] lease_epoch   KEYS[2] live_resume   ARGV[1] epoch   ARGV[2] value   ARGV[3] TTL ms
-- Returns 1 if stored, 0 if refused.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

# -- per-slot fences on a cluster (store.leases): a new owner raises the fence of each
# slot of its symbol's keys to its epoch before it starts; a write carrying an older
# epoch is refused in the same script that would write (one slot, atomic)

FENCE_RAISE: Final = r"""
-- KEYS[1] a fence   ARGV[1] epoch   Sets the fence to the epoch unless it is higher.
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > now then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""

# put before a script whose keys are its own then the fence (KEYS[#KEYS]) and whose
# arguments are its own then the epoch (the last ARGV, taken off before it runs)
FENCE_PREFIX: Final = r"""
local epoch = tonumber(table.remove(ARGV))
if tonumber(redis.call('GET', KEYS[#KEYS]) or '0') > epoch then return -1 end
"""

FENCED_SET: Final = (
    FENCE_PREFIX
    + r"""
-- KEYS[1] key   KEYS[2] its fence   ARGV[1] value   ARGV[2] TTL ms   ARGV[3] epoch
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
)

FENCED_WRITE_LIVE_CLOSED: Final = FENCE_PREFIX + WRITE_LIVE_CLOSED
FENCED_WRITE_CANDLES: Final = FENCE_PREFIX + WRITE_CANDLES
