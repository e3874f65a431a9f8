-- Switchboard ACD on Redis: the same rules as src/core.rs, one script call per batch of
-- commands for ONE tenant, so every multi-key change is atomic.
--
-- KEYS: 1 agents set, 2 calls set, 3 queues set, 4 leases zset, 5 wrap zset, 6 presence zset,
--       7 nodes zset, 8 events stream, 9 sentinel. All carry the tenant hash tag {t:<tenant>}.
-- Entity keys (agent, call, queue structures) are derived from ARGV[1], the tenant's key base,
-- which carries the same hash tag, so they always live in the same cluster slot as KEYS.
-- ARGV: 1 base, 2 now_ms, 3 random seed, 4 presence_ttl, 5 node_ttl, 6 missed_limit,
--       7 event maxlen, 8 scan limit, 9 op ('exec' | 'call' | 'stats' | 'reconcile'),
--       10.. op arguments (for 'exec': one JSON command each).
-- Time comes from ARGV[2] only; Redis TTLs are never used for logic.

local B = ARGV[1]
local now = tonumber(ARGV[2])
local rng = tonumber(ARGV[3])
local PRES_TTL = tonumber(ARGV[4])
local NODE_TTL = tonumber(ARGV[5])
local MISSED_LIMIT = tonumber(ARGV[6])
local MAXLEN = ARGV[7]
local SCAN = tonumber(ARGV[8])
local OP = ARGV[9]
local K_AGENTS, K_CALLS, K_QUEUES, K_LEASES = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_WRAP, K_PRES, K_NODES, K_EVENTS = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local DAY = 86400000
local PW = 10000000000000
local null = cjson.null

local function nn(v) if v == null then return nil end return v end
local function rand() rng = (rng * 16807) % 2147483647; return rng end
local function qk(q, s) return B .. 'q:' .. q .. ':' .. s end
local function call_score(prio, enq) return (255 - prio) * PW + enq end

local events = {}
local function emit(t) t.at_ms = now; events[#events + 1] = t end

local function sorted(list) table.sort(list); return list end

-- queue config cache ------------------------------------------------------------------------
local cfgs = {}
local function qcfg(q)
  local c = cfgs[q]
  if c == nil then
    local raw = redis.call('GET', qk(q, 'cfg'))
    if not raw then cfgs[q] = false; return nil end
    c = cjson.decode(raw)
    cfgs[q] = c
  end
  if c == false then return nil end
  return c
end

-- agents --------------------------------------------------------------------------------------
local agents = {}
local function load_agent(id)
  local a = agents[id]
  if a ~= nil then if a == false then return nil end return a end
  local r = redis.call('HGETALL', B .. 'a:' .. id)
  if #r == 0 then agents[id] = false; return nil end
  a = {}
  for i = 1, #r, 2 do a[r[i]] = r[i + 1] end
  for _, f in ipairs({'since', 'idle', 'pres', 'missed', 'handled', 'talk'}) do
    a[f] = tonumber(a[f]) or 0
  end
  if a.reason == '' then a.reason = nil end
  if a.call == '' then a.call = nil end
  a.wrap = tonumber(a.wrap)
  agents[id] = a
  return a
end
local function agent_skills(a)
  if not a.sk then a.sk = cjson.decode(a.skills or '{}') end
  return a.sk
end
-- the fields a state change touches (the rest only change through save_agent)
local function save_status(id, a)
  redis.call('HSET', B .. 'a:' .. id, 'st', a.st, 'since', a.since, 'idle', a.idle, 'missed', a.missed,
    'reason', a.reason or '', 'call', a.call or '', 'wrap', a.wrap or '')
end
local function save_agent(id, a)
  redis.call('HSET', B .. 'a:' .. id, 'st', a.st, 'since', a.since, 'idle', a.idle, 'pres', a.pres,
    'skills', a.skills, 'conn', a.conn or '', 'missed', a.missed, 'handled', a.handled, 'talk', a.talk,
    'reason', a.reason or '', 'call', a.call or '', 'wrap', a.wrap or '')
end

-- calls ---------------------------------------------------------------------------------------
local calls = {}
local function load_call(id)
  local c = calls[id]
  if c ~= nil then if c == false then return nil end return c end
  local r = redis.call('HGETALL', B .. 'c:' .. id)
  if #r == 0 then calls[id] = false; return nil end
  c = {}
  for i = 1, #r, 2 do c[r[i]] = r[i + 1] end
  for _, f in ipairs({'prio', 'enq', 'entered', 'lease', 'ans', 'cb'}) do c[f] = tonumber(c[f]) or 0 end
  if c.pref == '' then c.pref = nil end
  local list = {}
  for a in string.gmatch(c.agents or '', '[^,]+') do list[#list + 1] = a end
  c.agents = list
  calls[id] = c
  return c
end
local function call_skills(c)
  if not c.sk then c.sk = cjson.decode(c.skills or '{}') end
  return c.sk
end
local function save_call(id, c)
  redis.call('HSET', B .. 'c:' .. id, 'queue', c.queue, 'prio', c.prio, 'skills', c.skills,
    'pref', c.pref or '', 'node', c.node, 'enq', c.enq, 'entered', c.entered, 'st', c.st,
    'agents', table.concat(c.agents, ','), 'lease', c.lease, 'ans', c.ans, 'cb', c.cb,
    'caller', c.caller or '')
end
-- the fields an offer or an answer touches
local function save_call_state(id, c)
  redis.call('HSET', B .. 'c:' .. id, 'st', c.st, 'agents', table.concat(c.agents, ','), 'lease', c.lease,
    'ans', c.ans)
end
local function delete_call(id, c)
  redis.call('DEL', B .. 'c:' .. id)
  redis.call('SREM', K_CALLS, id)
  redis.call('SREM', B .. 'n:' .. c.node, id)
  redis.call('ZREM', K_LEASES, id)
  redis.call('ZREM', qk(c.queue, 'w'), id)
  redis.call('ZREM', qk(c.queue, 'since'), id)
  calls[id] = false
end

-- queue members and statistics ----------------------------------------------------------------
local mcache = {}
local function member(q, id)
  local ck = q .. '|' .. id
  local m = mcache[ck]
  if m ~= nil then if m == false then return nil end return m end
  local v = redis.call('HGET', qk(q, 'm'), id)
  if not v then mcache[ck] = false; return nil end
  local tier, pos, dyn = string.match(v, '^(%d+)|(%d+)|(%d)$')
  m = {tier = tonumber(tier), pos = tonumber(pos), dyn = dyn == '1'}
  mcache[ck] = m
  return m
end

-- an agent's queues (sorted), cached for this script call
local aqs = {}
local function agent_queues(id)
  local l = aqs[id]
  if not l then
    l = sorted(redis.call('SMEMBERS', B .. 'aq:' .. id))
    aqs[id] = l
  end
  return l
end

local rolled = {}
local function stats_key(q)
  local k = qk(q, 's')
  if rolled[q] then return k end
  rolled[q] = true
  local d = math.floor(now / DAY)
  local cur = tonumber(redis.call('HGET', k, 'day') or '-1')
  if cur ~= d then
    redis.call('HSET', k, 'day', d, 'queued', 0, 'answered', 0, 'abandoned', 0, 'within', 0,
      'wait_sum', 0, 'handle_sum', 0, 'handle_n', 0)
  end
  return k
end

local function aht(q, cfg)
  local k = qk(q, 's')
  local v = redis.call('HMGET', k, 'day', 'handle_sum', 'handle_n')
  local n = tonumber(v[3]) or 0
  if tonumber(v[1]) == math.floor(now / DAY) and n > 0 then
    return math.floor(tonumber(v[2]) / n)
  end
  return cfg.default_aht_ms
end

local function eta(q, cfg, position)
  local free = redis.call('ZCARD', qk(q, 'r'))
  if position <= free then return 0 end
  local staffed = tonumber(redis.call('HGET', qk(q, 's'), 'staffed') or '0')
  if staffed < 1 then staffed = 1 end
  return math.floor((position - free) * aht(q, cfg) / staffed)
end

local function ready_score(q, cfg, id, a, m)
  local s = cfg.strategy
  if s == 'longest_idle' then return a.idle
  elseif s == 'round_robin' then return tonumber(redis.call('HGET', qk(q, 'rr'), id) or '0')
  elseif s == 'ring_all' then return 0
  elseif s == 'random' then return 0
  elseif s == 'fewest_calls' then return a.handled
  elseif s == 'least_talk_time' then return a.talk
  elseif s == 'linear' then return m.pos
  else
    local sk = nn(cfg.rank_skill)
    local lvl = 0
    if sk then lvl = tonumber(agent_skills(a)[sk] or 0) end
    return -lvl
  end
end

local function add_ready(q, id, a)
  if a.st ~= 'ready' then return end
  local cfg = qcfg(q)
  local m = member(q, id)
  if not cfg or not m then return end
  redis.call('ZADD', qk(q, 'r'), ready_score(q, cfg, id, a, m), id)
end

local function staffed(st) return st ~= 'logged_out' and st ~= 'not_ready' end

local function set_status(id, a, to, reason, call)
  local from = a.st
  a.st = to; a.reason = reason; a.call = call; a.since = now
  if to ~= 'wrap_up' then a.wrap = nil end
  save_status(id, a)
  local delta = (staffed(to) and 1 or 0) - (staffed(from) and 1 or 0)
  for _, q in ipairs(agent_queues(id)) do
    if from == 'ready' then redis.call('ZREM', qk(q, 'r'), id) end
    if delta ~= 0 then redis.call('HINCRBY', qk(q, 's'), 'staffed', delta) end
    if to == 'ready' then add_ready(q, id, a) end
  end
  if to == 'wrap_up' and a.wrap then
    redis.call('ZADD', K_WRAP, a.wrap, id)
  elseif from == 'wrap_up' then
    redis.call('ZREM', K_WRAP, id)
  end
  if to == 'logged_out' then redis.call('ZREM', K_PRES, id) end
  emit({type = 'agent_state', agent = id, from = from, to = to, reason = reason, call = call})
end

-- matching ------------------------------------------------------------------------------------
local function eligible(q, cfg, c, id, a)
  local m = member(q, id)
  if not m then return false end
  if cfg.tier_wait_ms > 0 and m.tier > math.floor((now - c.entered) / cfg.tier_wait_ms) then
    return false
  end
  if c.pref and c.pref ~= id and now < c.entered + cfg.sticky_ms then
    local p = load_agent(c.pref)
    if p and p.st ~= 'logged_out' then return false end
  end
  local req = call_skills(c)
  if next(req) ~= nil then
    local have = agent_skills(a)
    for s, min in pairs(req) do
      local l = have[s]
      if not l or l < min then return false end
    end
  end
  return true
end

local function reserve(cid, c, cfg, chosen)
  c.st = 'reserved'
  c.agents = chosen
  c.lease = now + cfg.ring_timeout_ms
  save_call_state(cid, c)
  redis.call('ZREM', qk(c.queue, 'w'), cid)
  redis.call('ZREM', qk(c.queue, 'since'), cid)
  redis.call('ZADD', K_LEASES, c.lease, cid)
  if cfg.strategy == 'round_robin' then
    for _, id in ipairs(chosen) do
      local seq = redis.call('HINCRBY', qk(c.queue, 's'), 'rr_seq', 1)
      redis.call('HSET', qk(c.queue, 'rr'), id, seq)
    end
  end
  for _, id in ipairs(chosen) do
    local a = load_agent(id)
    set_status(id, a, 'reserved', nil, cid)
    emit({type = 'call_offered', call = cid, agent = id, queue = c.queue, lease_until_ms = c.lease,
      callback = c.cb == 1})
  end
end

local CHUNK = 8
local function match_call(cid)
  local c = load_call(cid)
  if not c or c.st ~= 'waiting' then return end
  local cfg = qcfg(c.queue)
  if not cfg then return end
  local ring_all = cfg.strategy == 'ring_all'
  -- random picks uniformly among all eligible ready agents at match time
  local collect_all = ring_all or cfg.strategy == 'random'
  local chosen = {}
  local start = 0
  while start < SCAN do
    local stop = math.min(start + CHUNK, SCAN) - 1
    local ids = redis.call('ZRANGE', qk(c.queue, 'r'), start, stop)
    for _, id in ipairs(ids) do
      local a = load_agent(id)
      if a and eligible(c.queue, cfg, c, id, a) then
        chosen[#chosen + 1] = id
        if not collect_all then break end
      end
    end
    if (#chosen > 0 and not collect_all) or #ids < stop - start + 1 then break end
    start = stop + 1
  end
  if not ring_all and #chosen > 1 then chosen = {chosen[(rand() % #chosen) + 1]} end
  if #chosen > 0 then reserve(cid, c, cfg, chosen) end
end

local function match_agent(id)
  local a = load_agent(id)
  if not a or a.st ~= 'ready' then return end
  local best_score, best_cid
  for _, q in ipairs(agent_queues(id)) do
    local cfg = qcfg(q)
    if cfg then
      local start, done = 0, false
      while start < SCAN and not done do
        local stop = math.min(start + CHUNK, SCAN) - 1
        local ws = redis.call('ZRANGE', qk(q, 'w'), start, stop, 'WITHSCORES')
        for i = 1, #ws, 2 do
          local cid, sc = ws[i], tonumber(ws[i + 1])
          if best_score and (best_score < sc or (best_score == sc and best_cid <= cid)) then
            done = true; break
          end
          local c = load_call(cid)
          if c and eligible(q, cfg, c, id, a) then
            best_score, best_cid = sc, cid
            done = true; break
          end
        end
        if #ws < 2 * (stop - start + 1) then done = true end
        start = stop + 1
      end
    end
  end
  if best_cid then match_call(best_cid) end
end

local function match_all()
  for _, q in ipairs(sorted(redis.call('SMEMBERS', K_QUEUES))) do
    if redis.call('ZCARD', qk(q, 'r')) > 0 then
      for _, cid in ipairs(redis.call('ZRANGE', qk(q, 'w'), 0, SCAN - 1)) do match_call(cid) end
    end
  end
end

-- queue line ----------------------------------------------------------------------------------
local function insert_waiting(cid, c)
  c.st = 'waiting'
  c.agents = {}
  save_call(cid, c)
  redis.call('ZREM', K_LEASES, cid)
  redis.call('ZADD', qk(c.queue, 'w'), call_score(c.prio, c.enq), cid)
  redis.call('ZADD', qk(c.queue, 'since'), c.entered, cid)
  local position = redis.call('ZRANK', qk(c.queue, 'w'), cid) + 1
  local cfg = qcfg(c.queue)
  emit({type = 'call_queued', call = cid, queue = c.queue, position = position,
    eta_ms = cfg and eta(c.queue, cfg, position) or 0})
end

local function left_queue(q, entered)
  local cfg = qcfg(q)
  if not cfg then return end
  local k = stats_key(q)
  if now - entered <= cfg.service_level_ms then redis.call('HINCRBY', k, 'within', 1) end
end

local function release_offer(cid, agent, reason)
  local c = load_call(cid)
  if not c then return false end
  local keep = {}
  for _, a in ipairs(c.agents) do if a ~= agent then keep[#keep + 1] = a end end
  c.agents = keep
  save_call(cid, c)
  emit({type = 'offer_released', call = cid, agent = agent, reason = reason})
  if #keep == 0 then insert_waiting(cid, c); return true end
  return false
end

local function missed(id)
  local a = load_agent(id)
  if not a then return end
  a.missed = a.missed + 1
  if a.missed >= MISSED_LIMIT then
    set_status(id, a, 'not_ready', 'missed_calls', nil)
  else
    a.idle = now
    set_status(id, a, 'ready', nil, nil)
  end
end

local function no_answer(cid, list, reason)
  local back = false
  for _, a in ipairs(list) do
    if release_offer(cid, a, reason) then back = true end
    missed(a)
  end
  if back then match_call(cid) end
  for _, a in ipairs(list) do match_agent(a) end
end

local function end_call(cid, reason)
  local c = load_call(cid)
  if not c then return end
  local q = c.queue
  local freed = {}
  local why
  delete_call(cid, c)
  if c.st == 'waiting' or c.st == 'reserved' then
    for _, id in ipairs(c.agents) do
      emit({type = 'offer_released', call = cid, agent = id, reason = 'call_ended'})
      local a = load_agent(id)
      if a then set_status(id, a, 'ready', nil, nil) end
      freed[#freed + 1] = id
    end
    local cfg = qcfg(q)
    if cfg then redis.call('HINCRBY', stats_key(q), 'abandoned', 1) end
    left_queue(q, c.entered)
    why = 'abandoned'
  else
    local cfg = qcfg(q)
    local wrap = cfg and cfg.wrap_up_ms or 0
    local talk = math.max(0, now - c.ans)
    if cfg then
      local k = stats_key(q)
      redis.call('HINCRBY', k, 'handle_sum', talk + wrap)
      redis.call('HINCRBY', k, 'handle_n', 1)
    end
    for _, id in ipairs(c.agents) do
      local a = load_agent(id)
      if a and a.st == 'on_call' and a.call == cid then
        a.talk = a.talk + talk
        a.handled = a.handled + 1
        a.idle = now
        redis.call('HSET', B .. 'a:' .. id, 'talk', a.talk, 'handled', a.handled)
        if wrap > 0 then
          a.wrap = now + wrap
          set_status(id, a, 'wrap_up', nil, cid)
        else
          set_status(id, a, 'ready', nil, nil)
          freed[#freed + 1] = id
        end
      end
    end
    why = 'completed'
  end
  emit({type = 'call_ended', call = cid, queue = q, reason = reason or why})
  for _, id in ipairs(freed) do match_agent(id) end
end

local function overflow(cid, target, reason)
  local c = load_call(cid)
  if not c then return end
  local from = c.queue
  emit({type = 'call_overflowed', call = cid, from_queue = from, target = target, reason = reason})
  if target.kind == 'callback' then
    c.cb = 1
    save_call(cid, c)
    return
  end
  if target.kind == 'queue' and qcfg(target.queue) then
    redis.call('ZREM', qk(from, 'w'), cid)
    redis.call('ZREM', qk(from, 'since'), cid)
    left_queue(from, c.entered)
    c.queue = target.queue
    c.entered = now
    redis.call('HINCRBY', stats_key(target.queue), 'queued', 1)
    insert_waiting(cid, c)
    match_call(cid)
    return
  end
  left_queue(from, c.entered)
  delete_call(cid, c)
end

-- commands ------------------------------------------------------------------------------------
local function err(kind, detail) return {error = kind, detail = detail} end
local function illegal(from, to) return err('illegal_transition', {from = from, to = to}) end
local function unknown_agent(id) return err('unknown_agent', id) end

local function need_agent(id)
  local a = load_agent(id)
  if not a then return nil, unknown_agent(id) end
  return a
end

local function configure_queue(cfg)
  local q = cfg.queue
  local ov = nn(cfg.overflow)
  if ov and ov.target.kind == 'queue' and ov.target.queue == q then
    return err('invalid', 'queue overflows into itself')
  end
  if cfg.ring_timeout_ms == 0 then return err('invalid', 'ring_timeout_ms must be > 0') end
  local members = cfg.members
  cfg.members = nil -- members live in the q:<id>:m hash; keep the stored config small
  redis.call('SET', qk(q, 'cfg'), cjson.encode(cfg))
  cfgs[q] = cfg
  redis.call('SADD', K_QUEUES, q)
  local mk = qk(q, 'm')
  local cur = redis.call('HGETALL', mk)
  local old = {}
  for i = 1, #cur, 2 do
    if string.sub(cur[i + 1], -1) == '0' then old[#old + 1] = cur[i] end
  end
  for _, a in ipairs(old) do redis.call('HDEL', mk, a) end
  mcache = {}
  aqs = {}
  for i, m in ipairs(members) do
    redis.call('HSET', mk, m.agent, m.tier .. '|' .. (i - 1) .. '|0')
  end
  for _, a in ipairs(old) do
    if redis.call('HEXISTS', mk, a) == 0 then redis.call('SREM', B .. 'aq:' .. a, q) end
  end
  redis.call('DEL', qk(q, 'r'))
  local all = redis.call('HKEYS', mk)
  local n = 0
  for _, id in ipairs(all) do
    redis.call('SADD', B .. 'aq:' .. id, q)
    local a = load_agent(id)
    if a then
      if staffed(a.st) then n = n + 1 end
      add_ready(q, id, a)
    end
  end
  aqs = {}
  redis.call('HSET', qk(q, 's'), 'staffed', n)
  emit({type = 'queue_configured', queue = q})
  match_all()
end

local function new_call(e, q, cb)
  local enq = nn(e.enqueued_at_ms) or now
  local c = {queue = q, prio = e.priority, skills = cjson.encode(e.skills), pref = nn(e.preferred_agent),
    node = e.node, enq = enq, entered = now, st = 'waiting', agents = {}, lease = 0, ans = 0,
    cb = cb and 1 or 0, caller = nn(e.caller) or ''}
  if next(e.skills) == nil then c.skills = '{}' end
  calls[e.call] = c
  redis.call('SADD', K_CALLS, e.call)
  redis.call('SADD', B .. 'n:' .. e.node, e.call)
  redis.call('HINCRBY', stats_key(q), 'queued', 1)
  insert_waiting(e.call, c)
end

local function enqueue(e)
  local caller = nn(e.caller)
  if caller and (#caller > 64 or string.find(caller, '%c')) then
    return err('invalid', 'caller: at most 64 bytes, no control characters')
  end
  if load_call(e.call) then return err('duplicate_call', e.call) end
  local cfg = qcfg(e.queue)
  if not cfg then return err('unknown_queue', e.queue) end
  local ov = nn(cfg.overflow)
  local anyone = true
  if ov and ov.when_no_agents then
    anyone = false
    for _, id in ipairs(redis.call('HKEYS', qk(e.queue, 'm'))) do
      local a = load_agent(id)
      if a and a.st ~= 'logged_out' then anyone = true; break end
    end
  end
  local full = redis.call('ZCARD', qk(e.queue, 'w')) >= cfg.max_len
  local reason
  if ov and not anyone and ov.when_no_agents then reason = 'no_agents'
  elseif ov and full and ov.when_full then reason = 'full'
  elseif full then return err('queue_full', e.queue) end
  local until_ = now + NODE_TTL
  local cur = tonumber(redis.call('ZSCORE', K_NODES, e.node) or '0')
  if until_ > cur then redis.call('ZADD', K_NODES, until_, e.node) end
  if reason then
    emit({type = 'call_overflowed', call = e.call, from_queue = e.queue, target = ov.target,
      reason = reason})
    if ov.target.kind == 'queue' and qcfg(ov.target.queue) then
      new_call(e, ov.target.queue, false)
      match_call(e.call)
    elseif ov.target.kind == 'callback' then
      new_call(e, e.queue, true)
      match_call(e.call)
    end
  else
    new_call(e, e.queue, false)
    match_call(e.call)
  end
end

local function tick()
  -- 1. presence
  local gone = sorted(redis.call('ZRANGEBYSCORE', K_PRES, '-inf', now))
  for _, id in ipairs(gone) do
    local a = load_agent(id)
    redis.call('ZREM', K_PRES, id)
    if a and a.st ~= 'logged_out' then
      local st, call = a.st, a.call
      set_status(id, a, 'logged_out', nil, nil)
      if st == 'reserved' and call then
        if release_offer(call, id, 'agent_lost') then match_call(call) end
      elseif st == 'on_call' and call then
        end_call(call, 'agent_lost')
      end
    end
  end
  -- 2. dead gateway nodes
  local dead = sorted(redis.call('ZRANGEBYSCORE', K_NODES, '-inf', now))
  for _, n in ipairs(dead) do
    redis.call('ZREM', K_NODES, n)
    for _, cid in ipairs(sorted(redis.call('SMEMBERS', B .. 'n:' .. n))) do
      end_call(cid, 'node_lost')
    end
    redis.call('DEL', B .. 'n:' .. n)
  end
  -- 3. expired reservation leases
  for _, cid in ipairs(sorted(redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', now))) do
    local c = load_call(cid)
    if c and c.st == 'reserved' and c.lease <= now then
      local list = {}
      for _, a in ipairs(c.agents) do list[#list + 1] = a end
      no_answer(cid, list, 'no_answer')
    elseif not c or c.st ~= 'reserved' then
      redis.call('ZREM', K_LEASES, cid)
    end
  end
  -- 4. wrap-up timeouts
  for _, id in ipairs(sorted(redis.call('ZRANGEBYSCORE', K_WRAP, '-inf', now))) do
    local a = load_agent(id)
    if a and a.st == 'wrap_up' then
      a.idle = now
      set_status(id, a, 'ready', nil, nil)
      match_agent(id)
    else
      redis.call('ZREM', K_WRAP, id)
    end
  end
  -- 5. overflow and max wait
  for _, q in ipairs(sorted(redis.call('SMEMBERS', K_QUEUES))) do
    local cfg = qcfg(q)
    local ov = cfg and nn(cfg.overflow)
    local after = ov and nn(ov.after_ms)
    local maxw = cfg and nn(cfg.max_wait_ms)
    local th = after
    if maxw and (not th or maxw < th) then th = maxw end
    if th then
      -- in line order (priority, enqueue time, id), like the in-memory engine
      local due = {}
      for _, cid in ipairs(redis.call('ZRANGEBYSCORE', qk(q, 'since'), '-inf', now - th)) do
        local c = load_call(cid)
        if c then due[#due + 1] = {call_score(c.prio, c.enq), cid} end
      end
      table.sort(due, function(x, y) return x[1] < y[1] or (x[1] == y[1] and x[2] < y[2]) end)
      for _, d in ipairs(due) do
        local cid = d[2]
        local c = load_call(cid)
        if c and c.cb == 0 and c.st == 'waiting' then
          local waited = now - c.entered
          if after and waited >= after then
            overflow(cid, ov.target, 'wait')
          elseif maxw and waited >= maxw then
            left_queue(q, c.entered)
            delete_call(cid, c)
            emit({type = 'call_ended', call = cid, queue = q, reason = 'max_wait'})
          end
        end
      end
    end
  end
  -- 6. tiers widen, sticky windows close
  match_all()
end

local function command(cmd)
  local op = cmd.op
  if op == 'configure_queue' then return configure_queue(cmd.config)
  elseif op == 'login' then
    local id = cmd.agent
    local a = load_agent(id)
    if not a then
      a = {st = 'logged_out', since = now, idle = now, pres = 0, missed = 0, handled = 0, talk = 0}
      agents[id] = a
      redis.call('SADD', K_AGENTS, id)
    end
    a.pres = now + PRES_TTL
    a.conn = cmd.conn -- the newest session takes over
    a.skills = cjson.encode(cmd.skills)
    if next(cmd.skills) == nil then a.skills = '{}' end
    a.sk = nil
    redis.call('ZADD', K_PRES, a.pres, id)
    save_agent(id, a)
    if a.st == 'logged_out' then
      a.missed = 0
      set_status(id, a, 'not_ready', 'login', nil)
    end
  elseif op == 'heartbeat' then
    local a, e = need_agent(cmd.agent)
    if not a then return e end
    if a.st == 'logged_out' then return illegal(a.st, 'heartbeat') end
    if a.conn ~= cmd.conn then return err('stale_connection', cmd.agent) end
    a.pres = now + PRES_TTL
    save_agent(cmd.agent, a)
    redis.call('ZADD', K_PRES, a.pres, cmd.agent)
  elseif op == 'logout' then
    local id = cmd.agent
    local a, e = need_agent(id)
    if not a then return e end
    local st, call = a.st, a.call
    if st == 'ready' or st == 'not_ready' or st == 'wrap_up' then
      set_status(id, a, 'logged_out', nil, nil)
    elseif st == 'reserved' then
      set_status(id, a, 'logged_out', nil, nil)
      if call and release_offer(call, id, 'logout') then match_call(call) end
    else
      return illegal(st, 'logged_out')
    end
  elseif op == 'set_ready' then
    local id = cmd.agent
    local a, e = need_agent(id)
    if not a then return e end
    local st = a.st
    if st ~= 'not_ready' and st ~= 'wrap_up' then return illegal(st, 'ready') end
    a.idle = now
    if st == 'not_ready' then a.missed = 0 end
    set_status(id, a, 'ready', nil, nil)
    match_agent(id)
  elseif op == 'set_not_ready' then
    local id = cmd.agent
    local a, e = need_agent(id)
    if not a then return e end
    local st = a.st
    if st ~= 'ready' and st ~= 'not_ready' and st ~= 'wrap_up' then return illegal(st, 'not_ready') end
    set_status(id, a, 'not_ready', cmd.reason, nil)
  elseif op == 'extend_wrap_up' then
    local id = cmd.agent
    local a, e = need_agent(id)
    if not a then return e end
    if a.st ~= 'wrap_up' then return illegal(a.st, 'wrap_up') end
    a.wrap = (a.wrap or now) + cmd.extra_ms
    save_agent(id, a)
    redis.call('ZADD', K_WRAP, a.wrap, id)
    emit({type = 'agent_state', agent = id, from = 'wrap_up', to = 'wrap_up', call = a.call})
  elseif op == 'join_queue' then
    local q, id = cmd.queue, cmd.agent
    if not qcfg(q) then return err('unknown_queue', q) end
    local m = member(q, id)
    if m then
      redis.call('HSET', qk(q, 'm'), id, cmd.tier .. '|' .. m.pos .. '|' .. (m.dyn and '1' or '0'))
    else
      local pos = 1000000 + redis.call('HINCRBY', qk(q, 's'), 'next_pos', 1)
      redis.call('HSET', qk(q, 'm'), id, cmd.tier .. '|' .. pos .. '|1')
      local a = load_agent(id)
      if a and staffed(a.st) then redis.call('HINCRBY', qk(q, 's'), 'staffed', 1) end
    end
    redis.call('SADD', B .. 'aq:' .. id, q)
    mcache[q .. '|' .. id] = nil
    aqs[id] = nil
    local a = load_agent(id)
    if a then add_ready(q, id, a) end
    emit({type = 'member_changed', queue = q, agent = id, tier = cmd.tier})
    match_agent(id)
  elseif op == 'leave_queue' then
    local q, id = cmd.queue, cmd.agent
    if not qcfg(q) then return err('unknown_queue', q) end
    if redis.call('HDEL', qk(q, 'm'), id) == 0 then
      return err('invalid', 'agent ' .. id .. ' is not a member of ' .. q)
    end
    redis.call('ZREM', qk(q, 'r'), id)
    local a = load_agent(id)
    if a and staffed(a.st) then redis.call('HINCRBY', qk(q, 's'), 'staffed', -1) end
    redis.call('SREM', B .. 'aq:' .. id, q)
    mcache[q .. '|' .. id] = nil
    aqs[id] = nil
    emit({type = 'member_changed', queue = q, agent = id})
  elseif op == 'enqueue' then return enqueue(cmd.entry)
  elseif op == 'answer' or op == 'reject' then
    local cid, id = cmd.call, cmd.agent
    local c = load_call(cid)
    if not c then return err('unknown_call', cid) end
    local offered = false
    for _, a in ipairs(c.agents) do if a == id then offered = true end end
    if c.st ~= 'reserved' or not offered then return err('not_offered', {call = cid, agent = id}) end
    if op == 'reject' then
      no_answer(cid, {id}, 'rejected')
      return
    end
    local others = {}
    for _, a in ipairs(c.agents) do if a ~= id then others[#others + 1] = a end end
    for _, o in ipairs(others) do
      release_offer(cid, o, 'ring_all_lost')
      set_status(o, load_agent(o), 'ready', nil, nil)
    end
    c.st = 'answered'
    c.agents = {id}
    c.ans = now
    save_call_state(cid, c)
    redis.call('ZREM', K_LEASES, cid)
    local a = load_agent(id)
    a.missed = 0
    set_status(id, a, 'on_call', nil, cid)
    local wait = math.max(0, now - c.entered)
    local k = stats_key(c.queue)
    redis.call('HINCRBY', k, 'answered', 1)
    redis.call('HINCRBY', k, 'wait_sum', wait)
    left_queue(c.queue, c.entered)
    emit({type = 'call_answered', call = cid, agent = id, queue = c.queue, wait_ms = wait})
    for _, o in ipairs(others) do match_agent(o) end
  elseif op == 'hangup' then
    if not load_call(cmd.call) then return err('unknown_call', cmd.call) end
    end_call(cmd.call, nil)
  elseif op == 'node_heartbeat' then
    redis.call('ZADD', K_NODES, now + NODE_TTL, cmd.node)
  elseif op == 'tick' then
    tick()
  elseif op == 'recording_completed' then
    if #cmd.object_key == 0 or #cmd.object_key > 1024 or #cmd.sha256 ~= 64 then
      return err('invalid', 'recording: object_key 1 to 1024, sha256 64 characters')
    end
    emit({type = 'recording.completed', call = cmd.call, object_key = cmd.object_key,
          size_bytes = cmd.size_bytes, sha256 = cmd.sha256, duration_ms = cmd.duration_ms})
  elseif op == 'recording_failed' then
    if #cmd.reason > 500 then return err('invalid', 'recording: reason over 500 bytes') end
    emit({type = 'recording.failed', call = cmd.call, reason = cmd.reason})
  elseif op == 'recording_paused' then
    if cmd.by ~= 'dtmf' and cmd.by ~= 'api' then
      return err('invalid', 'recording: by is `dtmf` or `api`')
    end
    local kind = 'recording.resumed'
    if cmd.paused then kind = 'recording.paused' end
    emit({type = kind, call = cmd.call, by = cmd.by, offset_ms = cmd.offset_ms})
  else
    return err('invalid', 'unknown op ' .. tostring(op))
  end
end

-- reads and repair ----------------------------------------------------------------------------
local function call_view(cid)
  local c = load_call(cid)
  if not c then return false end
  local pos, e = -1, -1
  local cfg = qcfg(c.queue)
  if c.st == 'waiting' and cfg then
    local r = redis.call('ZRANK', qk(c.queue, 'w'), cid)
    if r then pos = r + 1; e = eta(c.queue, cfg, pos) end
  end
  local out = {c.queue, c.st, table.concat(c.agents, ','), pos, e, c.cb, c.prio, c.enq, c.entered, c.node,
    c.caller or ''}
  for i = 1, #out do
    if type(out[i]) == 'number' then out[i] = string.format('%.0f', out[i]) end
  end
  return out
end

local function queue_stats(q)
  local cfg = qcfg(q)
  if not cfg then return cjson.encode(err('unknown_queue', q)) end
  local counts = {logged_out = 0, ready = 0, not_ready = 0, reserved = 0, on_call = 0, wrap_up = 0}
  for _, id in ipairs(redis.call('HKEYS', qk(q, 'm'))) do
    local st = redis.call('HGET', B .. 'a:' .. id, 'st') or 'logged_out'
    counts[st] = (counts[st] or 0) + 1
  end
  local longest = 0
  local first = redis.call('ZRANGE', qk(q, 'since'), 0, 0, 'WITHSCORES')
  if #first == 2 then longest = math.max(0, now - tonumber(first[2])) end
  local s = {queued = 0, answered = 0, abandoned = 0, within = 0, wait_sum = 0}
  local v = redis.call('HMGET', qk(q, 's'), 'day', 'queued', 'answered', 'abandoned', 'within', 'wait_sum')
  if tonumber(v[1]) == math.floor(now / DAY) then
    s = {queued = tonumber(v[2]) or 0, answered = tonumber(v[3]) or 0, abandoned = tonumber(v[4]) or 0,
      within = tonumber(v[5]) or 0, wait_sum = tonumber(v[6]) or 0}
  end
  return cjson.encode({waiting = redis.call('ZCARD', qk(q, 'w')), longest_wait_ms = longest,
    agents = counts, queued = s.queued, answered = s.answered, abandoned = s.abandoned,
    left_within_sl = s.within, wait_sum = s.wait_sum, aht_ms = aht(q, cfg)})
end

local function reconcile()
  local fixes = {}
  local function fix(kind, subject) fixes[#fixes + 1] = kind; fixes[#fixes + 1] = subject end
  for _, id in ipairs(sorted(redis.call('SMEMBERS', K_AGENTS))) do
    local a = load_agent(id)
    if a and (a.st == 'reserved' or a.st == 'on_call') then
      local c = a.call and load_call(a.call)
      local want = a.st == 'reserved' and 'reserved' or 'answered'
      local ok = false
      if c and c.st == want then
        for _, x in ipairs(c.agents) do if x == id then ok = true end end
      end
      if not ok then
        local kind = a.st == 'reserved' and 'stuck_reserved_agent' or 'stuck_on_call_agent'
        set_status(id, a, 'not_ready', 'reconciled', nil)
        fix(kind, id)
      end
    end
  end
  local function holds(id, st, cid)
    local a = load_agent(id)
    return a and a.st == st and a.call == cid
  end
  for _, cid in ipairs(sorted(redis.call('SMEMBERS', K_CALLS))) do
    local c = load_call(cid)
    if not c then
      redis.call('SREM', K_CALLS, cid)
      fix('dangling_call_index', cid)
    elseif c.st == 'answered' then
      local ok = false
      for _, x in ipairs(c.agents) do if holds(x, 'on_call', cid) then ok = true end end
      if not ok then
        delete_call(cid, c)
        fix('answered_ghost', cid)
      end
    elseif c.st == 'reserved' then
      local keep = {}
      for _, x in ipairs(c.agents) do if holds(x, 'reserved', cid) then keep[#keep + 1] = x end end
      if #keep < #c.agents then
        if #keep == 0 then insert_waiting(cid, c) else c.agents = keep; save_call(cid, c) end
        fix('orphan_reservation', cid)
      end
    elseif c.st == 'waiting' then
      if not redis.call('ZSCORE', qk(c.queue, 'w'), cid) then
        redis.call('ZADD', qk(c.queue, 'w'), call_score(c.prio, c.enq), cid)
        redis.call('ZADD', qk(c.queue, 'since'), c.entered, cid)
        fix('lost_waiting_entry', cid)
      end
    end
  end
  return fixes
end

-- All events of one script call (a batch of commands, applied atomically one after the other)
-- go into ONE stream entry (field `e`, a JSON array), so a batch costs one XADD; an event's id
-- is `<entry id>/<index>`.
local function flush()
  if #events == 0 then return {} end
  local parts = {}
  for i, e in ipairs(events) do parts[i] = cjson.encode(e) end
  events = {}
  local json = '[' .. table.concat(parts, ',') .. ']'
  local id = redis.call('XADD', K_EVENTS, 'MAXLEN', '~', MAXLEN, '*', 'e', json)
  return {id, json}
end

if OP == 'exec' then
  -- reply: {entry id, events JSON, per command {'ok', first index, count} | {'err', json}}
  local results = {}
  for i = 10, #ARGV do
    local first = #events
    local e = command(cjson.decode(ARGV[i]))
    if e then
      for j = #events, first + 1, -1 do events[j] = nil end
      results[#results + 1] = {'err', cjson.encode(e)}
    else
      results[#results + 1] = {'ok', tostring(first), tostring(#events - first)}
    end
  end
  local r = flush()
  return {r[1] or '', r[2] or '', results}
elseif OP == 'call' then
  return call_view(ARGV[10])
elseif OP == 'stats' then
  return queue_stats(ARGV[10])
elseif OP == 'reconcile' then
  local fixes = reconcile()
  local ev = flush()
  return {fixes, ev}
end
return redis.error_reply('unknown op')
