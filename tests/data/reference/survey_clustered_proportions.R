# Clustered proportion intervals with R survey 4.1-1 (R 4.2.2) on apiclus1, the cluster
# sample of 183 Californian schools in 15 school districts that ships with the package.
# Run from the repository root: Rscript tests/data/reference/survey_clustered_proportions.R
# Writes api_clus1.csv (the columns the tests use) and prints the values they record.
suppressMessages(library(survey))
data(api)
d <- apiclus1[, c("dnum", "cds", "sch.wide", "awards", "stype")]
write.csv(data.frame(district = d$dnum, school = d$cds, sch_wide = as.integer(d$sch.wide == "Yes"), awards = as.integer(d$awards == "Yes"), stype = as.character(d$stype)), "tests/data/reference/api_clus1.csv", row.names = FALSE)
des <- svydesign(id = ~dnum, data = apiclus1)
show <- function(label, f, design) {
  m <- svymean(f, design)
  b <- svyciprop(f, design, method = "beta")
  b90 <- svyciprop(f, design, method = "beta", level = 0.9)
  cat(sprintf("%s p=%.15g se=%.15g beta95=(%.15g, %.15g) beta90=(%.15g, %.15g) n=%d G=%d\n", label, coef(m), SE(m), attr(b, "ci")[1], attr(b, "ci")[2], attr(b90, "ci")[1], attr(b90, "ci")[2], nrow(design), length(unique(design$cluster[,1]))))
  # Wilson score interval at the Korn-Graubard effective n, by root finding
  p <- coef(m)[[1]]; v <- vcov(m)[[1]]; a <- 0.05
  neff <- p * (1 - p) / v * (qt(a/2, nrow(design) - 1) / qt(a/2, degf(design)))^2
  z <- qnorm(1 - a/2)
  g <- function(q) (p - q)^2 - z^2 * q * (1 - q) / neff
  lo <- uniroot(g, c(1e-12, p), tol = 1e-14)$root; hi <- uniroot(g, c(p, 1 - 1e-12), tol = 1e-14)$root
  cat(sprintf("%s neff=%.15g wilson95=(%.15g, %.15g)\n", label, neff, lo, hi))
}
show("sch.wide", ~as.numeric(sch.wide == "Yes"), des)
show("awards", ~as.numeric(awards == "Yes"), des)
show("awards|E", ~as.numeric(awards == "Yes"), subset(des, stype == "E"))
