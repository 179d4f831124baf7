-- raftcache stores: each wrk thread writes its own keys to its own store (PUT /v1/keys/{key}).
-- The plan file (path in BENCH_PLAN) has one line per thread: "host port i1 i2 ...", the store
-- that thread connects to and the indexes of the keys it writes (k%07d). Run wrk with as many
-- threads as the plan has lines. "Direct" plans give each group's keys to a thread on that
-- group's leader store; "any store" plans give every key to a thread per store.
-- Args (after --): value_size
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local function plan_lines()
  local lines = {}
  for line in io.lines(os.getenv("BENCH_PLAN")) do
    if line ~= "" then
      lines[#lines + 1] = line
    end
  end
  return lines
end

local plan = nil
local count = 0

function setup(thread)
  plan = plan or plan_lines()
  count = count + 1
  local host, port = plan[count]:match("^(%S+)%s+(%S+)")
  thread.addr = wrk.lookup(host, port)[1]
  thread:set("tid", count)
end

local value
local paths = {}

function init(args)
  seed_thread()
  value = string.rep("v", tonumber(args[1] or "100"))
  local n = 0
  for word in plan_lines()[tid]:gmatch("%S+") do
    n = n + 1
    if n > 2 then -- the first two words are the host and the port
      paths[#paths + 1] = string.format("/v1/keys/k%07d", tonumber(word))
    end
  end
end

function request()
  return wrk.format("PUT", paths[math.random(#paths)], nil, value)
end
