-- poolx's redis:// queue: the one server-side script behind every operation.
--
-- Loaded as package data by poolx/queue/_redis_conn.py and registered with
-- redis-py's register_script (EVALSHA, and the script is sent again by itself
-- after a server restart).  Called as  EVALSHA sha 1 <prefix> <command> <args...>:
-- each queue operation is *one* script call, so it is atomic on the server and
-- costs one round trip (several tasks or results travel in one call where the
-- API allows it).  No WATCH/MULTI retry loops, no client-side read-modify-write.
-- Every command is idempotent under retry: creating calls carry a nonce.
--
-- KEYS[1] is the key prefix of one queue, <prefix>:{<queue>}:.  Every
-- key the script touches starts with it, so all of a queue's keys share the
-- hash tag {<queue>} and live in one Redis Cluster slot (the script builds
-- the other key names from the prefix; they hash to the same slot as
-- KEYS[1]).  The registry of live worker pools uses the prefix
-- <prefix>:{pools}: the same way.
--
-- Key layout (P = the prefix)::
--
--     P t:<id>     HASH   one task record (fields below)
--     P f:<seq>    HASH   a taken ignore_result task, detached from its id so
--                         the id can be enqueued again at once
--     P ready      LIST   refs of tasks ready to run; LPUSH new, RPOP to take,
--                         RPUSH to put a reclaimed task at the front
--     P deferred   SET    ids of pending tasks (waiting for Deferred arguments)
--     P leases     ZSET   refs of taken tasks, scored by lease deadline (ms)
--     P sched      ZSET   refs of scheduled tasks (delay/eta, retry back-off),
--                         scored by due time (ms); moved to ready when due
--     P bell       STRING set while a wake-up marker ('b') is in ready: a task
--                         due before every other was scheduled while the
--                         ready list was empty, so consumers blocked on it
--                         (waiting for the earlier due time) must look again
--     P w:<id>     LIST   wake-up tokens for result waiters (BLPOP)
--     P mb:<name>  LIST   a client's mailbox: ids of its tasks whose result
--                         arrived (LPUSH), drained by its ``wait`` calls
--     P mb:<name>:last  LIST  nonce of the last ``wait`` call, then (id, code,
--                         result) of each result it read, which it deleted
--                         (so a retried call gets them again)
--     P seq        STRING counter for detached records
--     P fetched:<nonce>  LIST  refs a ``fetch`` call took (so a retried call,
--                         its reply lost, gets the same tasks again)
--     P cx:<ref>   STRING a processing task was cancelled: the owner of the
--                         delivery that must stop and the record's nonce
--                         (only the owner is compared once the record is gone)
--                         (expires like a lease; the task's heartbeats renew it)
--     P cn:<consumer>  LIST  cancel notices for a consumer (refs): its
--                         watcher blocks on it while it runs tasks
--     P cancelled:<nonce>  STRING  what a ``cancel`` call answered (so a
--                         retried call, its reply lost, answers the same)
--     P periodic   ZSET   names of periodic entries, scored by next run (ms)
--     P pe:<name>  HASH   one periodic entry: tn task name, sc schedule text,
--                         nx next run (ms, server clock), v version, sp spec
--     P pwatch     ZSET   ids of schedulers waiting for entry changes, scored
--                         by when their registration expires (ms)
--     P pw:<id>    LIST   a scheduler's wake-up token (BLPOP), at most one
--
-- A *ref* names a record: t<id> is P t:<id>, f<seq> is P f:<seq>.
--
-- Task record fields::
--
--     s    status: pending | scheduled | enqueued | processing | completed
--     du   due time (ms, server clock) of a delayed task
--     m    the task message            id   task id (detached records)
--     ir   "1" if the result is ignored
--     ls   lease (ms) the task asks for: 2 * heartrate + 5 s
--     mx   deliveries allowed: 1 + max_retries
--     d    deliveries so far           o    owner of the current delivery
--     n    nonce of the call that created it (a retried call is recognized)
--     tn   the task's name             at   when it was created (ms, server clock)
--     na   number of Deferred arguments  need   how many are still missing
--     a:<arg id>   an argument's value   dep:<id>   a task that reserved this result
--     r    the result                  p    nonce of the pop that read it
--     wt   waiters registered for a wake-up token
--     mb   the mailbox of the client that waits for this result (prefetch)
--
-- Time comes from the server (TIME), so consumers on machines with skewed
-- clocks agree on lease deadlines.

if redis.replicate_commands then pcall(redis.replicate_commands) end

local P = KEYS[1]
local cmd = ARGV[1]
local READY = P .. 'ready'
local DEFERRED = P .. 'deferred'
local LEASES = P .. 'leases'
local SCHED = P .. 'sched'
local BELL = P .. 'bell'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function rkey(ref)
  return P .. string.sub(ref, 1, 1) .. ':' .. string.sub(ref, 2)
end

-- A live record exists and has not been read (popped) yet.
local function live(key)
  local f = redis.call('HMGET', key, 's', 'p')
  return f[1] and not f[2], f[1]
end

-- Commands over long argument lists, in slices (Lua's unpack is bounded).
local function chunked(verb, key, items)
  local out = {}
  for i = 1, #items, 1000 do
    local part = redis.call(verb, key, unpack(items, i, math.min(i + 999, #items)))
    if type(part) == 'table' then
      for _, v in ipairs(part) do out[#out + 1] = v end
    end
  end
  return out
end

-- Take up to n items from the right end of a list: one RPOP with a count
-- (Redis >= 6.2), else one at a time.
local function pop_list(key, n)
  if n <= 0 then return {} end
  if n > 1 then
    local items = redis.pcall('RPOP', key, n)
    if items == false then return {} end
    if type(items) == 'table' and not items.err then return items end
    items = {}  -- an older Redis: one by one
    for _ = 1, n do
      local item = redis.call('RPOP', key)
      if not item then break end
      items[#items + 1] = item
    end
    return items
  end
  local item = redis.call('RPOP', key)
  if item then return {item} end
  return {}
end

-- Wake consumers blocked on the empty ready list if `due` is earlier than
-- every scheduled task (each waits until the earliest it knew of): a marker
-- in ready ends their wait; the fetch that pops it drops the bell.  Called
-- before `due` is added.  Consumers not blocked see it at their next fetch.
local function ring(due)
  if redis.call('EXISTS', BELL) == 1 or redis.call('LLEN', READY) > 0 then return end
  local head = redis.call('ZRANGE', SCHED, 0, 0, 'WITHSCORES')
  if head[2] and tonumber(head[2]) <= due then return end
  redis.call('LPUSH', READY, 'b')
  redis.call('SET', BELL, '1')
end

-- Keep a task until `due` (ms): status scheduled, in the sched set.
local function schedule(ref, key, due)
  ring(due)
  redis.call('HSET', key, 's', 'scheduled', 'du', due)
  redis.call('ZADD', SCHED, due, ref)
end

-- A task that may run: queue it, or schedule it if it is not due yet.
local function make_ready(id, key)
  redis.call('SREM', DEFERRED, id)
  local due = tonumber(redis.call('HGET', key, 'du') or '0')
  if due > 0 and due > now_ms() then
    schedule('t' .. id, key, due)
    return
  end
  redis.call('HSET', key, 's', 'enqueued')
  redis.call('LPUSH', READY, 't' .. id)
end

-- Queue the scheduled tasks that are due (up to limit), earliest first.
-- Due means strictly before `now` (whole ms, rounded down): with delays
-- rounded up, a task never starts before its delay has passed.
local function promote(now, limit)
  local due = redis.call('ZRANGEBYSCORE', SCHED, '-inf', '(' .. now, 'LIMIT', 0, limit)
  if #due == 0 then return end
  local refs = {}
  for _, ref in ipairs(due) do
    local key = rkey(ref)
    if redis.call('HGET', key, 's') == 'scheduled' then
      redis.call('HSET', key, 's', 'enqueued')
      refs[#refs + 1] = ref
    end
  end
  redis.call('ZREMRANGEBYRANK', SCHED, 0, #due - 1)  -- the lowest scores: these
  chunked('LPUSH', READY, refs)
end

-- A taken task handed back (requeue, retry): its record under its id again
-- (an ignore_result task's detached one re-attached, unless the id was
-- enqueued again meanwhile), lease dropped -> key, ref, deliveries; nil if
-- it is not processing by that delivery any more.
local function take_back(id, ref, owner)
  local key = rkey(ref)
  local f = redis.call('HMGET', key, 's', 'p', 'o', 'd')
  if f[1] ~= 'processing' or f[2] or (owner ~= '' and f[3] ~= owner) then return nil end
  redis.call('ZREM', LEASES, ref)
  if string.sub(ref, 1, 1) == 'f' then
    local tkey = P .. 't:' .. id
    if redis.call('EXISTS', tkey) == 1 and live(tkey) then
      redis.call('DEL', key)
      return nil
    end
    redis.call('DEL', tkey)
    redis.call('RENAME', key, tkey)
    redis.call('HDEL', tkey, 'id')
    key, ref = tkey, 't' .. id
  end
  redis.call('HDEL', key, 'o')
  return key, ref, tonumber(f[4] or '0')
end

-- Wake every registered waiter of a task's result, and tell the mailbox of
-- the client that enqueued it (if it subscribed).  A caller that read the
-- record's 'wt' and 'mb' fields already, or knows its time to live (ms),
-- passes them ({wt, mb}, ttl).
local function wake(id, key, f, ttl)
  f = f or redis.call('HMGET', key, 'wt', 'mb')
  if f[2] then
    local mbkey = P .. 'mb:' .. f[2]
    local length = redis.call('LPUSH', mbkey, id)
    ttl = math.max(ttl or redis.call('PTTL', key), 60000)
    if length == 1 or redis.call('PTTL', mbkey) < ttl then redis.call('PEXPIRE', mbkey, ttl) end
  end
  local waiters = tonumber(f[1] or '0')
  if waiters > 0 then
    local wkey = P .. 'w:' .. id
    local tokens = {}
    for i = 1, math.min(waiters, 64) do tokens[i] = '1' end
    redis.call('LPUSH', wkey, unpack(tokens))
    redis.call('PEXPIRE', wkey, 60000)
    redis.call('HDEL', key, 'wt')
  end
end

-- Hand a result (or the expired token) to every task that reserved it.
-- A caller that listed the record's fields already passes the 'dep:' ones.
local function deliver(id, key, msg, deps)
  local ready = {}
  local fields = deps or redis.call('HKEYS', key)
  local done = {}
  for _, field in ipairs(fields) do
    if string.sub(field, 1, 4) == 'dep:' then
      done[#done + 1] = field
      local dep = string.sub(field, 5)
      local dkey = P .. 't:' .. dep
      local ok, status = live(dkey)
      if ok and status == 'pending' and redis.call('HEXISTS', dkey, 'a:' .. id) == 0 then
        redis.call('HSET', dkey, 'a:' .. id, msg)
        if redis.call('HINCRBY', dkey, 'need', -1) <= 0 then
          make_ready(dep, dkey)
          ready[#ready + 1] = dep
        end
      end
    end
  end
  chunked('HDEL', key, done)
  return ready
end

-- Create a task record (at: the call's time, ms); 1 created, 2 same call
-- retried, 0 duplicate id.
local function create(id, msg, ir, ls, mx, name, at, nonce, status, mb)
  local key = P .. 't:' .. id
  local f = redis.call('HMGET', key, 's', 'p', 'n')
  if f[1] then
    if not f[2] then
      if f[3] == nonce then return 2, key end
      return 0, key
    end
    redis.call('DEL', key)
  end
  if mb and mb ~= '' then
    redis.call('HSET', key, 's', status, 'm', msg, 'ir', ir, 'ls', ls, 'mx', mx, 'd', 0, 'n', nonce,
               'tn', name, 'at', at, 'mb', mb)
  else
    redis.call('HSET', key, 's', status, 'm', msg, 'ir', ir, 'ls', ls, 'mx', mx, 'd', 0, 'n', nonce,
               'tn', name, 'at', at)
  end
  return 1, key
end

local function arguments(key, out)
  local fields = redis.call('HKEYS', key)
  local names = {}
  for _, field in ipairs(fields) do
    if string.sub(field, 1, 2) == 'a:' then names[#names + 1] = field end
  end
  out[#out + 1] = #names
  if #names > 0 then
    local values = {}
    for i = 1, #names, 1000 do
      local part = redis.call('HMGET', key, unpack(names, i, math.min(i + 999, #names)))
      for j = 1, #part do values[i + j - 1] = part[j] end
    end
    for i, field in ipairs(names) do
      out[#out + 1] = string.sub(field, 3)
      out[#out + 1] = values[i] or ''
    end
  end
end

-- Store one result (see setres): the dependents it made ready.
local function store(id, msg, ttl)
  local key = P .. 't:' .. id
  redis.call('ZREM', LEASES, 't' .. id)
  local f = redis.call('HMGET', key, 's', 'p', 'wt', 'mb')
  local status = f[1]
  if not status or f[2] or status == 'completed' then return {} end
  if status == 'scheduled' then redis.call('ZREM', SCHED, 't' .. id) end  -- a late result
  -- only a pending task is in DEFERRED (make_ready takes it out)
  if status == 'pending' then redis.call('SREM', DEFERRED, id) end
  local drop, deps = {'m'}, {}
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, 2) == 'a:' then
      drop[#drop + 1] = field
    elseif string.sub(field, 1, 4) == 'dep:' then
      deps[#deps + 1] = field
    end
  end
  chunked('HDEL', key, drop)
  redis.call('HSET', key, 's', 'completed', 'r', msg)
  redis.call('PEXPIRE', key, ttl)
  wake(id, key, {f[3], f[4]}, ttl)
  return deliver(id, key, msg, deps)
end

-- A taken ignore_result task finished: drop its lease (and detached record).
local function done(ref, owner)
  local key = rkey(ref)
  if owner == '' or redis.call('HGET', key, 'o') == owner then
    redis.call('ZREM', LEASES, ref)
    if string.sub(ref, 1, 1) == 'f' then redis.call('DEL', key) end
  end
end

-- Periodic entries changed: give every registered scheduler a wake-up token
-- (at most one each); registrations that expired are dropped.
local function wake_scheduler(id)
  local key = P .. 'pw:' .. id
  redis.call('LPUSH', key, '1')
  redis.call('LTRIM', key, 0, 0)
  redis.call('PEXPIRE', key, 60000)
end

local function wake_schedulers()
  local watch = P .. 'pwatch'
  chunked('ZREM', watch, redis.call('ZRANGEBYSCORE', watch, '-inf', now_ms()))
  for _, id in ipairs(redis.call('ZRANGE', watch, 0, -1)) do wake_scheduler(id) end
end

if cmd == 'enqueue' then
  -- nonce, mailbox ('' for none), n, n ids the mailbox no longer waits for,
  -- then (id, message, ir, lease ms, max deliveries, name, delay ms) per
  -- task (delay 0: ready now; otherwise scheduled)
  local nonce, mb, n = ARGV[2], ARGV[3], tonumber(ARGV[4])
  local at = now_ms()
  for j = 5, 4 + n do
    local key = P .. 't:' .. ARGV[j]
    if redis.call('HGET', key, 'mb') == mb then redis.call('HDEL', key, 'mb') end
  end
  local refs, dups = {}, {}
  for i = 5 + n, #ARGV, 7 do
    local id = ARGV[i]
    local delay = tonumber(ARGV[i + 6])
    local made, key = create(id, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5],
                             at, nonce, 'enqueued', mb)
    if made == 1 then
      if delay > 0 then
        schedule('t' .. id, key, at + delay)
      else
        refs[#refs + 1] = 't' .. id
      end
    elseif made == 0 then
      dups[#dups + 1] = id
    end
  end
  chunked('LPUSH', READY, refs)
  return dups

elseif cmd == 'defer' then
  -- nonce, id, message, ir, lease ms, max deliveries, number of arguments,
  -- mailbox ('' for none), name, delay ms (0: none; else the task is
  -- scheduled, once its arguments are in, if it is not due by then)
  local id, need = ARGV[3], tonumber(ARGV[8])
  local at = now_ms()
  local made, key = create(id, ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[10], at, ARGV[2],
                           'pending', ARGV[9])
  if made == 1 then
    redis.call('HSET', key, 'na', need, 'need', need)
    local delay = tonumber(ARGV[11] or '0')
    if delay > 0 then redis.call('HSET', key, 'du', at + delay) end
    if need > 0 then
      redis.call('SADD', DEFERRED, id)
    else
      make_ready(id, key)
    end
  end
  return made > 0 and 1 or 0

elseif cmd == 'undefer' then
  local id = ARGV[2]
  local key = P .. 't:' .. id
  local ok, status = live(key)
  if ok and status == 'pending' then make_ready(id, key) end
  return 0

elseif cmd == 'reserve' then
  -- argument id, deferred id -> {0} unknown, {1} will be delivered, {1, result}
  local key = P .. 't:' .. ARGV[2]
  local ok, status = live(key)
  if not ok then return {0} end
  if status == 'completed' then return {1, redis.call('HGET', key, 'r')} end
  redis.call('HSET', key, 'dep:' .. ARGV[3], '1')
  return {1}

elseif cmd == 'setarg' then
  -- task id, argument id, message -> 1 if that was the last missing one
  -- (the task is then queued here, so a lost reply cannot strand it)
  local id = ARGV[2]
  local key = P .. 't:' .. id
  local ok, status = live(key)
  if not ok or status ~= 'pending' then return 0 end
  if redis.call('HSETNX', key, 'a:' .. ARGV[3], ARGV[4]) == 0 then return 0 end
  if redis.call('HINCRBY', key, 'need', -1) <= 0 then
    make_ready(id, key)
    return 1
  end
  return 0

elseif cmd == 'args' then
  local out = {}
  local key = P .. 't:' .. ARGV[2]
  if live(key) then arguments(key, out) else out[1] = 0 end
  return out

elseif cmd == 'fetch' then
  -- consumer, count, lease ms for records that name none, reclaim limit,
  -- promote limit, nonce, ms to remember what this call took
  -- -> {reclaimed, ms to the next lease deadline or -1, ms until the next
  --     scheduled task is due or -1,
  --     then per task: ref, id, message, delivery, max deliveries, lease ms,
  --     nargs, (arg id, value)...}
  -- Scheduled tasks that are due are queued first (up to promote limit).
  -- A retried call (same nonce: the first one's reply was lost, e.g. Redis
  -- restarted) returns the tasks the first one took that are still leased
  -- to this consumer, instead of leaving them to wait for their leases.
  local consumer, count = ARGV[2], tonumber(ARGV[3])
  local min_lease, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
  local fetched = P .. 'fetched:' .. ARGV[7]
  local before = redis.call('LRANGE', fetched, 0, -1)
  if #before > 0 then
    local out = {0, -1, -1}
    for _, ref in ipairs(before) do
      local key = rkey(ref)
      local f = redis.call('HMGET', key, 's', 'o', 'd', 'id', 'm', 'mx', 'ls', 'na')
      if f[1] == 'processing' and f[2] == consumer .. '#' .. f[3] then
        local id = f[4]
        if string.sub(ref, 1, 1) == 't' then id = string.sub(ref, 2) end
        out[#out + 1] = ref
        out[#out + 1] = id
        out[#out + 1] = f[5]
        out[#out + 1] = tonumber(f[3])
        out[#out + 1] = f[6] or '0'
        out[#out + 1] = tonumber(f[7]) or min_lease
        if f[8] and tonumber(f[8]) > 0 then arguments(key, out) else out[#out + 1] = 0 end
      end
    end
    if #out > 3 then return out end  -- none still held: an ordinary fetch
  end
  local now = now_ms()
  promote(now, tonumber(ARGV[6] or '1000'))
  local reclaimed = 0
  local expired = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now, 'LIMIT', 0, limit)
  for _, ref in ipairs(expired) do
    redis.call('ZREM', LEASES, ref)
    local key = rkey(ref)
    if redis.call('HGET', key, 's') == 'processing' then
      redis.call('HSET', key, 's', 'enqueued')
      redis.call('RPUSH', READY, ref)
      reclaimed = reclaimed + 1
    end
  end
  local out = {reclaimed, -1, -1}
  local taken, took, leases = 0, {}, {}
  while taken < count do
    local refs = pop_list(READY, count - taken)
    if #refs == 0 then break end
    for _, ref in ipairs(refs) do
      if ref == 'b' then redis.call('DEL', BELL) end
      local key = rkey(ref)
      local f = redis.call('HMGET', key, 's', 'p', 'm', 'ir', 'ls', 'mx', 'id', 'na', 'd')
      if f[1] == 'enqueued' and not f[2] then
        local id = f[7]
        local delivery = (tonumber(f[9]) or 0) + 1
        local owner = consumer .. '#' .. delivery
        if string.sub(ref, 1, 1) == 't' then
          id = string.sub(ref, 2)
          if f[4] == '1' then
            -- Nobody waits for this result: free the id for re-use now, but
            -- keep the record (detached) until the consumer is done with it.
            ref = 'f' .. redis.call('INCR', P .. 'seq')
            local detached = rkey(ref)
            redis.call('RENAME', key, detached)
            key = detached
            redis.call('HSET', key, 's', 'processing', 'o', owner, 'd', delivery, 'id', id)
          else
            redis.call('HSET', key, 's', 'processing', 'o', owner, 'd', delivery)
          end
        else
          redis.call('HSET', key, 's', 'processing', 'o', owner, 'd', delivery)
        end
        local lease = tonumber(f[5]) or min_lease
        leases[#leases + 1] = now + lease
        leases[#leases + 1] = ref
        out[#out + 1] = ref
        out[#out + 1] = id
        out[#out + 1] = f[3]
        out[#out + 1] = delivery
        out[#out + 1] = f[6] or '0'
        out[#out + 1] = lease
        if f[8] and tonumber(f[8]) > 0 then arguments(key, out) else out[#out + 1] = 0 end
        took[#took + 1] = ref
        taken = taken + 1
      end
    end
  end
  if taken > 0 then
    for i = 1, #leases, 1000 do  -- (score, ref) pairs: the slices keep them whole
      redis.call('ZADD', LEASES, unpack(leases, i, math.min(i + 999, #leases)))
    end
    chunked('RPUSH', fetched, took)
    redis.call('PEXPIRE', fetched, ARGV[8])
  end
  if taken == 0 then
    local first = redis.call('ZRANGE', LEASES, 0, 0, 'WITHSCORES')
    if first[2] then out[2] = math.max(0, tonumber(first[2]) - now) end
    local due = redis.call('ZRANGE', SCHED, 0, 0, 'WITHSCORES')
    if due[2] then out[3] = math.max(0, tonumber(due[2]) - now) end
  end
  return out

elseif cmd == 'renew' then
  -- lease ms, then (ref, owner or '') pairs -> per pair 1 still leased,
  -- 2 cancelled, 0 lost
  local deadline = now_ms() + tonumber(ARGV[2])
  local out = {}
  for i = 3, #ARGV, 2 do
    local ref, owner = ARGV[i], ARGV[i + 1]
    local held = redis.call('ZSCORE', LEASES, ref)
    if held and owner ~= '' and redis.call('HGET', rkey(ref), 'o') ~= owner then held = false end
    if held then redis.call('ZADD', LEASES, deadline, ref) end
    if held then
      out[#out + 1] = 1
    elseif redis.call('PEXPIRE', P .. 'cx:' .. ref, tonumber(ARGV[2])) == 1 then
      out[#out + 1] = 2  -- cancelled (see cancel), still running: not a lost lease
    else
      out[#out + 1] = 0
    end
  end
  return out

elseif cmd == 'setres' or cmd == 'commit' then
  -- setres: id, message, ttl ms -> ids of the dependents this queued.
  -- commit: n, then n (id, message, ttl ms) results, then (ref, owner)
  -- pairs of finished ignore_result tasks -> ids of dependents queued.
  local ready = {}
  local n, first = 1, 2
  if cmd == 'commit' then n, first = tonumber(ARGV[2]), 3 end
  for i = first, first + 3 * n - 1, 3 do
    for _, dep in ipairs(store(ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]))) do
      ready[#ready + 1] = dep
    end
  end
  for i = first + 3 * n, #ARGV, 2 do done(ARGV[i], ARGV[i + 1]) end
  return ready

elseif cmd == 'pop' or cmd == 'wait' then
  -- pop: nonce, keep ms, register (0/1), n, n acked ids, ids... -> per id,
  -- in order, until the first that is not ready: code, message ('r'
  -- result, 'x' expired or unknown, 'w' not yet).  A 'w' ends the reply;
  -- with register, that task also counts one more waiter to wake when its
  -- result arrives.  A result pop reads is kept (marked read) until the
  -- caller acks it in its next call, or keep ms, for a retried call.
  -- wait: the same, then mailbox, drain limit, n, n ids no longer waited
  -- for, then ids...; every id is answered (a 'w' does not end the list),
  -- and the reply is {codes, drained, left}: drained is (id, code, message)
  -- for up to limit results of the mailbox's other tasks (not asked for),
  -- read now; left is how many entries the mailbox still holds.  A result
  -- wait reads is deleted at once: the call keeps its reply's results in
  -- the mailbox's last list (for keep ms, or until its next wait call), so
  -- a retried call (same nonce) gets them again, and nobody needs an ack.
  -- Acked ids are results the caller read in an earlier pop call: deleted now.
  local nonce, keep, register = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
  local i = 5
  for j = i + 1, i + tonumber(ARGV[i]) do
    local key = P .. 't:' .. ARGV[j]
    if redis.call('HEXISTS', key, 'p') == 1 then redis.call('DEL', key) end
  end
  i = i + tonumber(ARGV[i]) + 1
  if cmd == 'pop' then
    local out = {}
    for j = i, #ARGV do
      local key = P .. 't:' .. ARGV[j]
      local f = redis.call('HMGET', key, 's', 'p', 'r')
      if not f[1] then
        out[#out + 1] = 'x'; out[#out + 1] = ''
      elseif f[2] then
        -- already read: by this very call (a retry after a lost reply) or not
        if f[2] == nonce then
          out[#out + 1] = 'r'; out[#out + 1] = f[3]
        else
          out[#out + 1] = 'x'; out[#out + 1] = ''
        end
      elseif f[1] == 'completed' then
        redis.call('HSET', key, 'p', nonce)
        local ttl = redis.call('PTTL', key)
        if ttl < 0 or ttl > keep then redis.call('PEXPIRE', key, keep) end
        out[#out + 1] = 'r'; out[#out + 1] = f[3]
      else
        if register then redis.call('HINCRBY', key, 'wt', 1) end
        out[#out + 1] = 'w'; out[#out + 1] = ''
        break
      end
    end
    return out
  end
  local mb, limit = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  for j = i + 1, i + tonumber(ARGV[i]) do
    local key = P .. 't:' .. ARGV[j]
    if redis.call('HGET', key, 'mb') == mb then redis.call('HDEL', key, 'mb') end
  end
  i = i + tonumber(ARGV[i]) + 1
  local mbkey = P .. 'mb:' .. mb
  local last = mbkey .. ':last'
  -- last: nonce, then (id, code, message) per result the call read: code
  -- 'a' for one it was asked for, else as in drained
  local again = nil
  if redis.call('LINDEX', last, 0) == nonce then  -- a retried call: the same again
    again = {}
    local saved = redis.call('LRANGE', last, 1, -1)
    for j = 1, #saved, 3 do again[#again + 1] = {saved[j], saved[j + 1], saved[j + 2]} end
  end
  local out, asked, kept = {}, {}, {}
  local answered = {}
  if again then
    for _, entry in ipairs(again) do
      if entry[2] == 'a' then answered[entry[1]] = entry[3] end
    end
  end
  for j = i, #ARGV do
    local id = ARGV[j]
    asked[id] = true
    local key = P .. 't:' .. id
    if answered[id] then
      out[#out + 1] = 'r'; out[#out + 1] = answered[id]
    else
      local f = redis.call('HMGET', key, 's', 'p', 'r')
      if not f[1] or f[2] then  -- unknown, expired, or read by another call
        out[#out + 1] = 'x'; out[#out + 1] = ''
      elseif f[1] == 'completed' then
        redis.call('DEL', key)
        out[#out + 1] = 'r'; out[#out + 1] = f[3]
        kept[#kept + 1] = id; kept[#kept + 1] = 'a'; kept[#kept + 1] = f[3]
      else
        if register then redis.call('HINCRBY', key, 'wt', 1) end
        out[#out + 1] = 'w'; out[#out + 1] = ''
      end
    end
  end
  local drained = {}
  if again then
    chunked('RPUSH', last, kept)  -- read by the retry itself: for its own retry
    for _, entry in ipairs(again) do
      if entry[2] ~= 'a' and not asked[entry[1]] then
        drained[#drained + 1] = entry[1]
        drained[#drained + 1] = entry[2]
        drained[#drained + 1] = entry[3]
      end
    end
  else
    for _, id in ipairs(pop_list(mbkey, limit)) do
      local key = P .. 't:' .. id
      local f = redis.call('HMGET', key, 's', 'p', 'r', 'mb')
      if asked[id] then
        -- answered above
      elseif not f[1] or (f[4] == mb and f[2]) then
        -- gone (discarded, expired), or read by another reader
        drained[#drained + 1] = id; drained[#drained + 1] = 'x'; drained[#drained + 1] = ''
      elseif f[4] == mb and f[1] == 'completed' then
        redis.call('DEL', key)
        drained[#drained + 1] = id; drained[#drained + 1] = 'r'; drained[#drained + 1] = f[3]
      end
    end
    redis.call('DEL', last)
    if #kept > 0 or #drained > 0 then
      redis.call('RPUSH', last, nonce)
      chunked('RPUSH', last, kept)
      chunked('RPUSH', last, drained)
      redis.call('PEXPIRE', last, keep)
    end
  end
  return {out, drained, redis.call('LLEN', mbkey)}

elseif cmd == 'status' then
  local key = P .. 't:' .. ARGV[2]
  local ok, status = live(key)
  if ok and status == 'scheduled' and tonumber(redis.call('HGET', key, 'du')) < now_ms() then
    return 'enqueued'  -- due: the next fetch queues it
  end
  if ok then return status end
  return false

elseif cmd == 'size' then
  return redis.call('LLEN', READY) - redis.call('EXISTS', BELL) + redis.call('SCARD', DEFERRED)

elseif cmd == 'nsched' then
  return redis.call('ZCARD', SCHED)

elseif cmd == 'queued' then
  -- limit -> {server time ms, then per ready task: id, name, created ms}
  -- (the next to run first: the right end of the ready list)
  local out = {now_ms()}
  local refs = redis.call('LRANGE', READY, -tonumber(ARGV[2]), -1)
  local seen = {}
  for i = #refs, 1, -1 do
    local ref = refs[i]
    local f = redis.call('HMGET', rkey(ref), 's', 'p', 'id', 'tn', 'at')
    local id = f[3]
    if string.sub(ref, 1, 1) == 't' then id = string.sub(ref, 2) end
    if f[1] == 'enqueued' and not f[2] and not seen[ref] then
      seen[ref] = true
      out[#out + 1] = id
      out[#out + 1] = f[4] or ''
      out[#out + 1] = f[5] or ''
    end
  end
  return out

elseif cmd == 'discard' then
  -- id, expired token, ref of a detached record or ''
  local id, token, ref = ARGV[2], ARGV[3], ARGV[4]
  if ref ~= '' then
    redis.call('ZREM', LEASES, ref)
    if string.sub(ref, 1, 1) == 'f' then redis.call('DEL', rkey(ref)) end
  end
  local key = P .. 't:' .. id
  redis.call('ZREM', LEASES, 't' .. id)
  local ok, status = live(key)
  if not ok then return 0 end
  if status == 'enqueued' then redis.call('LREM', READY, 1, 't' .. id) end
  if status == 'scheduled' then redis.call('ZREM', SCHED, 't' .. id) end
  deliver(id, key, token)
  wake(id, key)
  redis.call('DEL', key)
  redis.call('SREM', DEFERRED, id)
  return 1

elseif cmd == 'purge' then
  -- drop every task waiting to run (pending, scheduled or enqueued)
  local function drop(ref, id)
    local key = rkey(ref)
    local ok, status = live(key)
    if ok and (status == 'enqueued' or status == 'pending' or status == 'scheduled') then
      wake(id or redis.call('HGET', key, 'id'), key)
      redis.call('DEL', key)
    end
  end
  for _, ref in ipairs(redis.call('LRANGE', READY, 0, -1)) do
    local id = nil
    if string.sub(ref, 1, 1) == 't' then id = string.sub(ref, 2) end
    drop(ref, id)
  end
  for _, id in ipairs(redis.call('SMEMBERS', DEFERRED)) do drop('t' .. id, id) end
  for _, ref in ipairs(redis.call('ZRANGE', SCHED, 0, -1)) do drop(ref, string.sub(ref, 2)) end
  redis.call('DEL', READY, DEFERRED, SCHED, BELL)
  return 0

elseif cmd == 'requeue' then
  -- id, message, ir, ref, owner: give back a taken task that never ran
  local id, msg, ref, owner = ARGV[2], ARGV[3], ARGV[5], ARGV[6]
  local key, tref, d = take_back(id, ref, owner)
  if not key then return 0 end
  redis.call('HSET', key, 'm', msg, 's', 'enqueued', 'd', math.max(0, d - 1))
  redis.call('RPUSH', READY, tref)
  return 1

elseif cmd == 'retry' then
  -- id, message, ir, ref, owner, delay ms: a taken task failed and runs
  -- again when due, with this message (its arguments resolved in it); no
  -- result is stored, so waiters and dependents keep waiting
  local id, msg, ref, owner = ARGV[2], ARGV[3], ARGV[5], ARGV[6]
  local key, tref = take_back(id, ref, owner)
  if not key then return 0 end
  local drop = {}
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, 2) == 'a:' then drop[#drop + 1] = field end
  end
  chunked('HDEL', key, drop)
  redis.call('HSET', key, 'm', msg, 'd', 0, 'na', 0, 'need', 0)
  schedule(tref, key, now_ms() + tonumber(ARGV[7]))
  return 1

elseif cmd == 'preg' then
  -- pool id, info, ttl ms (KEYS[1] is the pools prefix)
  redis.call('ZADD', P .. 'expiry', now_ms() + tonumber(ARGV[4]), ARGV[2])
  redis.call('HSET', P .. 'info', ARGV[2], ARGV[3])
  return 0

elseif cmd == 'punreg' then
  redis.call('ZREM', P .. 'expiry', ARGV[2])
  redis.call('HDEL', P .. 'info', ARGV[2])
  return 0

elseif cmd == 'pset' then
  -- name, task name, schedule, spec, next run ms, version -> 1 if it existed
  -- (an entry with the same schedule keeps its next run); new version each time
  local name = ARGV[2]
  local key = P .. 'pe:' .. name
  local old = redis.call('HMGET', key, 'sc', 'nx')
  local nx = ARGV[6]
  if old[1] == ARGV[4] and old[2] then nx = old[2] end
  redis.call('HSET', key, 'tn', ARGV[3], 'sc', ARGV[4], 'sp', ARGV[5], 'nx', nx,
             'v', ARGV[7])
  redis.call('ZADD', P .. 'periodic', nx, name)
  wake_schedulers()
  if old[1] then return 1 end
  return 0

elseif cmd == 'pdel' then
  -- name -> 1 if it existed
  local existed = redis.call('DEL', P .. 'pe:' .. ARGV[2])
  redis.call('ZREM', P .. 'periodic', ARGV[2])
  wake_schedulers()
  return existed

elseif cmd == 'plist' then
  -- scheduler id ('' for none), registration ms -> {now ms, then per entry
  -- (earliest next run first): name, task name, schedule, next ms, version, spec}
  -- A scheduler's wake-up token is dropped: only changes after this
  -- reading wake it.
  local now = now_ms()
  if ARGV[2] ~= '' then
    redis.call('DEL', P .. 'pw:' .. ARGV[2])
    -- (registrations of schedulers gone meanwhile expire here too, not only
    -- when an entry changes)
    redis.call('ZREMRANGEBYSCORE', P .. 'pwatch', '-inf', now)
    redis.call('ZADD', P .. 'pwatch', now + tonumber(ARGV[3]), ARGV[2])
  end
  local out = {now}
  for _, name in ipairs(redis.call('ZRANGE', P .. 'periodic', 0, -1)) do
    local f = redis.call('HMGET', P .. 'pe:' .. name, 'tn', 'sc', 'nx', 'v', 'sp')
    if f[1] then
      out[#out + 1] = name
      for i = 1, 5 do out[#out + 1] = f[i] end
    end
  end
  return out

elseif cmd == 'pclaim' then
  -- name, version, due ms, next ms, then the task: id, message, ir, lease ms,
  -- max deliveries, task name -> 1 if this call enqueued the tick; 0 if the
  -- entry changed or another scheduler claimed it, or it is not due yet
  local key = P .. 'pe:' .. ARGV[2]
  local f = redis.call('HMGET', key, 'v', 'nx')
  if f[1] ~= ARGV[3] or f[2] ~= ARGV[4] then return 0 end
  local now = now_ms()
  if now < tonumber(ARGV[4]) then return 0 end
  local id = ARGV[6]
  local made = create(id, ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], now, ARGV[3] .. ARGV[4],
                      'enqueued', '')
  if made == 1 then redis.call('LPUSH', READY, 't' .. id) end
  redis.call('HSET', key, 'nx', ARGV[5])
  redis.call('ZADD', P .. 'periodic', ARGV[5], ARGV[2])
  return 1

elseif cmd == 'pwake' then
  wake_scheduler(ARGV[2])
  return 0

elseif cmd == 'plive' then
  local now = now_ms()
  local dead = redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', now)
  chunked('ZREM', P .. 'expiry', dead)
  chunked('HDEL', P .. 'info', dead)
  local alive = redis.call('ZRANGEBYSCORE', P .. 'expiry', '(' .. now, '+inf')
  return chunked('HMGET', P .. 'info', alive)
end

if cmd == 'cancel' then
  -- id, cancelled token, ttl ms, nonce, ms to remember the answer -> 0 not cancelled (completed, read
  -- or unknown), 1 cancelled while waiting (it never runs), 2 cancelled
  -- while processing (its consumer is told: a marker, and a notice that
  -- wakes its watcher).  The outcome is the token, stored by store(): a
  -- result arriving later is dropped, a retry or requeue finds the task no
  -- longer processing.  A retried call (same nonce) answers as the first.
  local id, token, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4])
  local key, ref = P .. 't:' .. id, 't' .. id
  local said = P .. 'cancelled:' .. ARGV[5]
  local before = redis.call('GET', said)
  if before then return tonumber(before) end
  local f = redis.call('HMGET', key, 's', 'p', 'o', 'ls', 'ir', 'n')
  local status = f[1]
  if not status or f[2] or status == 'completed' then return 0 end
  local code = 1
  if status == 'enqueued' then
    redis.call('LREM', READY, 1, ref)
  elseif status == 'scheduled' then
    redis.call('ZREM', SCHED, ref)
  elseif status == 'processing' then
    local owner = f[3] or ''
    local consumer = string.match(owner, '^(.*)#%d+$')
    if consumer then
      local keep = math.max(tonumber(f[4]) or 0, 60000)
      -- The record's nonce too: a task enqueued again under this id (once
      -- this outcome was read) is another record, whose first delivery has
      -- the same owner name, and must not be stopped.
      redis.call('SET', P .. 'cx:' .. ref, owner .. ' ' .. (f[6] or ''), 'PX', keep)
      local notices = P .. 'cn:' .. consumer
      redis.call('LPUSH', notices, ref)
      redis.call('PEXPIRE', notices, keep)
    end
    code = 2
  end
  redis.call('SET', said, code, 'PX', tonumber(ARGV[6]))
  if f[5] == '1' then  -- nobody reads its outcome: the id is free at once
    redis.call('SREM', DEFERRED, id)
    redis.call('DEL', key)
    return code
  end
  store(id, token, ttl)  -- (a scheduled task leaves the schedule there)
  return code

elseif cmd == 'cxcheck' then
  -- consumer, then (ref, owner) pairs of the tasks it holds -> the refs
  -- among them that were cancelled.  The consumer's notices are dropped:
  -- this call looked at all it holds.  The markers stay (renew keeps them
  -- while the task's heartbeats come) until they expire.  A marker names
  -- the record's nonce so that a new record under the same id is not hit;
  -- once the record is gone (its cancelled outcome was read, which may
  -- well happen before this call), no new record is there to spare, and
  -- the owner alone says whether this delivery is the one cancelled.
  redis.call('DEL', P .. 'cn:' .. ARGV[2])
  local out = {}
  for i = 3, #ARGV, 2 do
    local mark = redis.call('GET', P .. 'cx:' .. ARGV[i])
    if mark then
      local owner, nonce = ARGV[i + 1] .. ' ', redis.call('HGET', rkey(ARGV[i]), 'n')
      if (nonce and mark == owner .. nonce)
          or (not nonce and string.sub(mark, 1, #owner) == owner) then
        out[#out + 1] = ARGV[i]
      end
    end
  end
  return out
end

return redis.error_reply('poolx: unknown script command ' .. tostring(cmd))
