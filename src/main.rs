use clap::Parser;

fn main() {
    let cli = pybake::cli::Cli::parse();
    std::process::exit(pybake::cli::run(cli));
}
