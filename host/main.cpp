#include "app.hpp"

int main(int argc, char** argv) { return aquin::host::run_app(argc, argv); }
