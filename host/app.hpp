// The `aquin` command line: global flags, built-in commands (version, plugins, tools, tool,
// session) and routing of every other command word to its analyzer plugin.
#pragma once

namespace aquin::host {

/// Runs the program; returns the exit code (0 done, 1 bad input or usage, 2 failed merge
/// verdict, 3 internal error).
int run_app(int argc, char** argv);

}  // namespace aquin::host
