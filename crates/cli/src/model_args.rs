//! The model flags every command shares, and loading a tokenizer from them.

use anyhow::{Context, Result};
use clap::Args;
use ferroformers::core::{HubOptions, PackagedModel};
use ferroformers::tokenizers::{AutoTokenizer, Tokenizer, TokenizerLoadOptions};

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A model folder, a .gguf file, or a Hub id `org/name[@revision]`
    /// [default: the packaged Qwen2.5-Coder-0.5B-Instruct GGUF]
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Which .gguf file of a folder or Hub repo to use.
    #[arg(long)]
    pub gguf_file: Option<String>,
    /// Hub branch, tag or commit.
    #[arg(long)]
    pub revision: Option<String>,
}

impl ModelArgs {
    /// The model to load: the flag, else the packaged default (with a fetch hint when missing).
    pub fn spec(&self) -> Result<String> {
        match &self.model {
            Some(m) => Ok(m.clone()),
            None => {
                let path = PackagedModel::Qwen25Coder05BInstruct.require()?;
                Ok(path.to_string_lossy().into_owned())
            }
        }
    }

    /// Hub options from the environment, with `--revision`.
    pub fn hub_options(&self) -> HubOptions {
        let mut hub = HubOptions::from_env();
        hub.revision = self.revision.clone();
        hub
    }

    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let spec = self.spec()?;
        let opts = TokenizerLoadOptions {
            hub: self.hub_options(),
            gguf_file: self.gguf_file.clone(),
        };
        AutoTokenizer::from_pretrained_with(&spec, &opts)
            .with_context(|| format!("loading the tokenizer of `{spec}`"))
    }
}
