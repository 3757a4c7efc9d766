//! Whole before images of a change stream (`enablePreImage()`).

use super::{Mongo, mg_err};
use crate::error::{Error, Result};
use mongodb::bson::{Document, doc};

impl Mongo {
    pub(super) fn require_pre_images(&mut self, tables: &[String]) -> Result<()> {
        // The server keeps a document's version before each change only for collections with
        // changeStreamPreAndPostImages enabled.
        let db = self.client.database(&self.database);
        let specs: Vec<Document> = self
            .rt
            .run(async {
                let cursor = db.run_command(doc! {"listCollections": 1, "filter": {"name": {"$in": tables}}}).await?;
                Ok::<_, mongodb::error::Error>(
                    cursor
                        .get_document("cursor")
                        .ok()
                        .and_then(|c| c.get_array("firstBatch").ok())
                        .map_or_else(Vec::new, |b| b.iter().filter_map(|d| d.as_document().cloned()).collect()),
                )
            })?
            .map_err(mg_err)?;
        for t in tables {
            let enabled = specs.iter().any(|s| {
                s.get_str("name") == Ok(t.as_str())
                    && s.get_document("options")
                        .and_then(|o| o.get_document("changeStreamPreAndPostImages"))
                        .and_then(|p| p.get_bool("enabled"))
                        == Ok(true)
            });
            if !enabled {
                return Err(Error::config(format!(
                    "MongoDB collection {}.{t}: enablePreImage() needs the documents before each change, which the \
                     server keeps only with changeStreamPreAndPostImages; run \
                     `db.runCommand({{collMod: \"{t}\", changeStreamPreAndPostImages: {{enabled: true}}}})` \
                     and start the flow again, or remove enablePreImage()",
                    self.database
                )));
            }
        }
        self.pre_images = true;
        Ok(())
    }
}
