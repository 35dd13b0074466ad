// The host's plugin handling, through the real binary: discovery, refusals, errors at the boundary.
#include "cli_runner.hpp"

#include <gtest/gtest.h>

#include <thread>

using aquin::test::Cli;
using aquin::test::fixture_plugins;

TEST(CliVersion, PrintsVersionsBlasAndThreads) {
  Cli cli;
  auto r = cli.run("--version");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("aquin 0.1.0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("libtorch 1.13"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("BLAS "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("openblas"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("threads " + std::to_string(std::thread::hardware_concurrency())), std::string::npos) << r.out;
}

TEST(CliPlugins, ListsBuiltInPlugins) {
  Cli cli;
  auto r = cli.run("plugins");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("analyzer"), std::string::npos);
  EXPECT_NE(r.out.find("weight-diff"), std::string::npos);
  EXPECT_NE(r.out.find("run_weight_diff"), std::string::npos);
  EXPECT_NE(r.out.find("model-adapter  llm"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("model-adapter  embedding"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("refused"), std::string::npos) << r.out;
}

TEST(CliPlugins, GoodFixtureFromPluginDirAndEnvPath) {
  Cli cli;
  auto r = cli.run("--plugin-dir " + fixture_plugins("good") + " fixture-echo --text ab --times 3");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("ababab"), std::string::npos);
  cli.env = "AQUIN_PLUGIN_PATH=" + fixture_plugins("good");
  r = cli.run("fixture-echo --text x");
  ASSERT_EQ(r.code, 0) << r.err;
}

struct RefusalCase {
  const char* dir;
  const char* reason;
};

class CliRefusal : public ::testing::TestWithParam<RefusalCase> {};

TEST_P(CliRefusal, IsListedWithItsReasonAndNothingCrashes) {
  Cli cli;
  auto r = cli.run("--plugin-dir " + fixture_plugins(GetParam().dir) + " plugins");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("refused"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(GetParam().reason), std::string::npos) << r.out;
  // The built-in command still works next to the bad plugin.
  r = cli.run("--plugin-dir " + fixture_plugins(GetParam().dir) + " weight-diff --help");
  EXPECT_EQ(r.code, 0) << r.err;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CliRefusal,
                         ::testing::Values(RefusalCase{"bad_abi", "ABI 99, host supports 3"},
                                           RefusalCase{"no_entry", "no entry point 'aquin_plugin_entry'"},
                                           RefusalCase{"create_throws", "create failed: fixture refuses to be created"},
                                           RefusalCase{"dup", "duplicate analyzer name 'fixture-dup': already provided by"}));

TEST(CliPlugins, DuplicateNamesBothFiles) {
  Cli cli;
  auto r = cli.run("--plugin-dir " + fixture_plugins("dup") + " plugins");
  EXPECT_NE(r.out.find("libfixture_dup_a.so"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("libfixture_dup_b.so"), std::string::npos) << r.out;
}

TEST(CliPlugins, NotASharedLibrary) {
  Cli cli;
  aquin::test::TempDir dir;
  aquin::test::write_bytes(dir / "libnotreally.so", "this is text, not ELF\n");
  aquin::test::write_bytes(dir / "libtruncated.so", std::string("\x7f" "ELF\x02\x01\x01", 7));
  auto r = cli.run("--plugin-dir " + dir.path().string() + " plugins");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("libnotreally.so: not a shared library"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("libtruncated.so: cannot load"), std::string::npos) << r.out;
}

TEST(CliPlugins, RunThatThrowsIsAnInternalErrorNotACrash) {
  Cli cli;
  auto r = cli.run("--plugin-dir " + fixture_plugins("run_throws") + " fixture-crash --text a");
  EXPECT_EQ(r.code, 3);
  EXPECT_NE(r.err.find("fixture-crash failed: fixture bug in run"), std::string::npos) << r.err;
  EXPECT_EQ(aquin::test::count_lines(r.err), 1) << r.err;
  r = cli.run("--plugin-dir " + fixture_plugins("run_input_error") + " fixture-input --text a");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "aquin: error: fixture.txt: bad fixture input\n");
}

TEST(CliUsage, UnknownCommandAndBadOptions) {
  Cli cli;
  auto r = cli.run("no-such-command");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("unknown command 'no-such-command'"), std::string::npos);
  r = cli.run("--plugin-dir " + fixture_plugins("good") + " fixture-echo --text a --times many");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("option --times: expected an integer, got 'many'"), std::string::npos) << r.err;
  r = cli.run("--plugin-dir " + fixture_plugins("good") + " fixture-echo");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("missing required option --text"), std::string::npos) << r.err;
  r = cli.run("--plugin-dir " + fixture_plugins("good") + " fixture-echo --text a --bogus 1");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("bogus"), std::string::npos) << r.err;
}

TEST(CliTool, ValidationErrorsNameTheField) {
  Cli cli;
  const std::string pd = "--plugin-dir " + fixture_plugins("good") + " ";
  auto r = cli.run(pd + "tool run_fixture_echo --input '{\"text\": 5}'");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("field 'text': expected a string, got integer"), std::string::npos) << r.err;
  r = cli.run(pd + "tool run_fixture_echo --input '{}'");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("field 'text': required"), std::string::npos) << r.err;
  r = cli.run(pd + "tool run_fixture_echo --input '{\"text\": \"a\", \"colour\": 1}'");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("field 'colour': unknown field"), std::string::npos) << r.err;
  r = cli.run(pd + "tool run_fixture_echo --input '{\"text\": \"a\", \"times\": 2.5}'");
  EXPECT_NE(r.err.find("field 'times': expected an integer, got number"), std::string::npos) << r.err;
  r = cli.run(pd + "tool run_fixture_echo --input '{\"text\": '");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("tool input: invalid JSON"), std::string::npos) << r.err;
  r = cli.run(pd + "tool run_fixture_echo", "{\"text\": \"zz\", \"times\": 2}");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("\"echo\": \"zzzz\""), std::string::npos) << r.out;
  r = cli.run(pd + "tool run_nothing --input '{}'");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("unknown tool 'run_nothing'"), std::string::npos);
}
