// `strata serve` and `strata chat` as a user runs them: the server on
// loopback answering the official OpenAI client for Node and stopping on
// SIGTERM, the terminal chat, and the refusals of bad template choices.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "serve/serve_fixture.h"
#include "test_util.h"

extern char** environ;

namespace strata {
namespace {

namespace fs = std::filesystem;
using test::run_cli;

const std::string& tiny_model_dir() {
  static const std::string dir = [] {
    const std::string d = test::make_temp_dir("serve-model") + "/tiny";
    auto r = run_cli("init --preset tiny --seed 3 -o '" + d + "'");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return d;
  }();
  return dir;
}

// A `strata serve` process with stderr in a file; stopped with SIGTERM.
struct ServerProcess {
  pid_t pid = -1;
  int port = 0;
  std::string err_path;

  explicit ServerProcess(const std::vector<std::string>& extra) {
    err_path = test::make_temp_dir("serve-run") + "/err";
    std::vector<std::string> args = {STRATA_CLI_PATH, "serve", "-m", tiny_model_dir(), "--tokenizer",
                                     test::serve_tokenizer_path(), "--port", "0", "--threads", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    EXPECT_EQ(posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    const std::regex listening("http://127\\.0\\.0\\.1:([0-9]+)");
    for (int i = 0; i < 600 && port == 0; ++i) {
      std::smatch m;
      const std::string err = test::read_file(err_path);
      if (std::regex_search(err, m, listening)) port = std::stoi(m[1]);
      else std::this_thread::sleep_for(std::chrono::milliseconds(50));
      int status = 0;
      if (port == 0 && waitpid(pid, &status, WNOHANG) == pid) {
        ADD_FAILURE() << "strata serve exited: " << err;
        pid = -1;
        return;
      }
    }
  }
  // SIGTERM; the exit code, or -1 if it did not stop within 20 s.
  int stop() {
    if (pid < 0) return -1;
    kill(pid, SIGTERM);
    for (int i = 0; i < 400; ++i) {
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    pid = -1;
    return -1;
  }
  ~ServerProcess() { stop(); }
};

TEST(CliServe, ServesOnLoopbackLogsRequestsAndStopsOnSigterm) {
  ServerProcess s({"--api-key", "sekret", "--parallel", "2"});
  ASSERT_GT(s.port, 0) << test::read_file(s.err_path);
  httplib::Client c("127.0.0.1", s.port);
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(c.Get("/v1/models")->status, 401);
  c.set_bearer_token_auth("sekret");
  auto r = c.Post("/v1/completions", R"({"prompt": "the cat", "max_tokens": 3})", "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(nlohmann::json::parse(r->body)["model"], "tiny");
  EXPECT_EQ(s.stop(), 0);
  const std::string err = test::read_file(s.err_path);
  EXPECT_NE(err.find("POST /v1/completions 200"), std::string::npos) << err;
  EXPECT_NE(err.find("GET /v1/models 401"), std::string::npos) << err;
  EXPECT_NE(err.find("stopping"), std::string::npos) << err;
}

// The raw bytes of a stream as curl receives them: events framed as
// "data: ...\n\n", the role first, [DONE] last.
TEST(CliServe, StreamsFrameServerSentEventsForCurl) {
  if (std::system("command -v curl >/dev/null 2>&1") != 0) GTEST_SKIP() << "skipped: curl is not installed";
  ServerProcess s({});
  ASSERT_GT(s.port, 0) << test::read_file(s.err_path);
  auto r = test::run_binary("curl", "-sN http://127.0.0.1:" + std::to_string(s.port) +
                                        "/v1/chat/completions -H 'Content-Type: application/json' -d "
                                        "'{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
                                        "\"max_tokens\": 3, \"stream\": true}'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string& body = r.out;
  ASSERT_GE(body.size(), 20u) << body;
  EXPECT_EQ(body.rfind("data: {", 0), 0u) << body;
  EXPECT_NE(body.find("\"role\":\"assistant\""), std::string::npos) << body;
  EXPECT_EQ(body.substr(body.size() - 14), "data: [DONE]\n\n") << body;
  // Nothing but events: every block is one data line.
  size_t blocks = 0;
  for (size_t at = 0; at < body.size(); ++blocks) {
    const size_t end = body.find("\n\n", at);
    ASSERT_NE(end, std::string::npos) << body;
    const std::string event = body.substr(at, end - at);
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
    EXPECT_EQ(event.find('\n'), std::string::npos) << event;
    at = end + 2;
  }
  EXPECT_GE(blocks, 4u);  // role, content, finish, [DONE]
}

TEST(CliServe, AnswersTheOfficialOpenAiClient) {
  const char* modules = std::getenv("STRATA_OPENAI_MODULES");
  if (!modules || !*modules)
    GTEST_SKIP() << "skipped: STRATA_OPENAI_MODULES is not set (scripts/test.sh sets it from "
                    "scripts/setup_openai_client.sh, which needs npm and the npm registry)";
  ServerProcess s({"--api-key", "sekret"});
  ASSERT_GT(s.port, 0) << test::read_file(s.err_path);
  const std::string script = std::string(STRATA_SOURCE_DIR) + "/tests/node/openai_client.mjs";
  auto r = test::run_binary("node", "'" + script + "' '" + modules + "' http://127.0.0.1:" + std::to_string(s.port) +
                                        "/v1 sekret");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err << test::read_file(s.err_path);
  EXPECT_EQ(r.out, "ok\n");
}

// The short form of scripts/soak_serve.sh: 15 s of mixed load from 6
// clients (whole, streamed and dropped streams, greedy probes, refusals) on
// stories260K; every answer as expected, the server healthy, a clean
// SIGTERM, bounded RSS growth.
TEST(CliServe, ShortSoakAnswersEveryRequestAsExpected) {
  STRATA_REQUIRE_SHARED_DATA(data);
  if (std::system("node --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "node not found: skipping the soak";
#if defined(__SANITIZE_ADDRESS__)
  const std::string bound = "512";  // AddressSanitizer's quarantine holds freed memory
#else
  const std::string bound = "64";
#endif
  auto r = test::run_binary(std::string(STRATA_SOURCE_DIR) + "/scripts/soak_serve.sh", "15 6",
                            "STRATA='" + std::string(STRATA_CLI_PATH) + "' MODEL='" + data + "/stories260K.bin' TOKENIZER='" +
                                data + "/tok512.model' SOAK_RSS_MIB=" + bound);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("soak_serve: passed"), std::string::npos) << r.out << r.err;
  EXPECT_NE(r.out.find("\"abandoned\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"probe\""), std::string::npos) << r.out;
}

TEST(CliServe, RefusesTemplatesItCannotRender) {
  auto r = run_cli("serve -m '" + tiny_model_dir() + "' --tokenizer '" + test::serve_tokenizer_path() +
                   "' --chat-template vicuna --port 0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("zephyr"), std::string::npos) << r.err;
  const std::string dir = test::make_temp_dir("serve-tmpl") + "/m";
  fs::copy(tiny_model_dir(), dir, fs::copy_options::recursive);
  test::write_file(dir + "/tokenizer_config.json", R"({"chat_template": "{{ messages | tojson }}"})");
  r = run_cli("serve -m '" + dir + "' --tokenizer '" + test::serve_tokenizer_path() + "' --port 0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--chat-template"), std::string::npos) << r.err;
}

TEST(CliChat, KeepsTheConversationResetsAndSaves) {
  const std::string saved = test::make_temp_dir("chat") + "/conv.json";
  auto r = test::run_cli_with_input(
      "chat -m '" + tiny_model_dir() + "' --tokenizer '" + test::serve_tokenizer_path() + "' --temp 0 -n 4 --system 'Be brief.'",
      "hello there\nwhy not\n/save " + saved + "\n/reset\nthe cat\n/quit\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(test::read_file(saved));
  ASSERT_EQ(j["messages"].size(), 5u);  // system, two users, two answers
  EXPECT_EQ(j["messages"][0]["role"], "system");
  EXPECT_EQ(j["messages"][1]["content"], "hello there");
  EXPECT_EQ(j["messages"][2]["role"], "assistant");
  EXPECT_EQ(j["messages"][3]["content"], "why not");
  EXPECT_NE(r.err.find("conversation cleared"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("generated"), std::string::npos) << r.err;
  // Three answers, one per line.
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 3) << r.out;
}

}  // namespace
}  // namespace strata
